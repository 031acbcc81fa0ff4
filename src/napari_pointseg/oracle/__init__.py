"""Oracle experiments: Algorithm 1 (PixelLabeling), samplers, the random-forest baseline, and
the paper's order / sampler tables. ``pixel_labeling.run_oracle`` is the entry point; the
`pointseg oracle / orders / samplers` subcommands live in ``oracle.cli``."""
