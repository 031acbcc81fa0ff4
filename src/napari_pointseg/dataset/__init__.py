"""Dataset-level training (How low can we go?, section 4): per-image pseudo-labels, one network
over all images, self-training. Entry points: `pipeline.iter_pipeline` / `run_pipeline`,
`grid.iter_grid`; the `pointseg dataset` command is `cli.dataset`. No Qt / napari imports here."""
