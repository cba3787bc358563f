"""``python -m relaxed_e3nn ...`` (what ``torchrun --nproc_per_node N -m relaxed_e3nn train ...`` runs)."""
import sys

from relaxed_e3nn.cli import main

if __name__ == "__main__":
    sys.exit(main())
