"""`python -m layerkit`: the same command as the `layerkit` script."""

from layerkit.cli.entry import main

main()
