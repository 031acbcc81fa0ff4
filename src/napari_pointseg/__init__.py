"""napari-pointseg: a few clicked points -> a full segmentation, by training a network from
scratch on the image being annotated. The Qt-free library lives in ``napari_pointseg.core``."""

__version__ = "0.1.0"
