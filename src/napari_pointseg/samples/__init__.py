"""Sample data: synthetic generators with exact ground truth (``synthetic``), human-like
example clicks (``clicks``), and the bundled sample files plus generated data sets
(``files``). The napari "Open Sample" contribution (``napari/sample_data.py``) reads
``files``. No Qt / napari imports here."""
