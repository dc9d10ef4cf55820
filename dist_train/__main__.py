"""`python -m dist_train ...` is the same as the `dist-train` console script (torchrun's `-m dist_train` uses it)."""

from dist_train.cli import main

if __name__ == "__main__":
    main()
