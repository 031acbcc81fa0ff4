"""Oracle experiments: Algorithm 1 (PixelLabeling), samplers, the random-forest baseline, and
the paper's order / sampler tables. The oracle loop itself lives in ``core.oracle_loop``; the
`pointseg oracle / orders / samplers` subcommands in ``cli.oracle``."""
