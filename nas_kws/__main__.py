"""`python -m nas_kws ...` is `nas-kws ...`; torchrun starts each process of a job this way:
`torchrun --standalone --nproc-per-node N -m nas_kws train ...`."""
import sys

from nas_kws.cli import main

sys.exit(main())
