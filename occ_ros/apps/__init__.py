"""Applications on top of the library: the `occ-ros` command line and its subcommands, bag
replay scoring, the demo and the benchmarks. Nothing in the library imports from here."""
