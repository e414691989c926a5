"""Architecture search with Peter et al.'s flags, e.g.

    python arch_search.py --flops_ref_value 20e6 --n_mfcc 10
    python arch_search.py --search_space hybrid --grad_reg_loss_type budget --flops_ref_value 10e6

Same as `nas-kws search ...`; see nas_kws/nas/commands.py.
"""
import sys

from nas_kws.nas.commands import main

if __name__ == "__main__":
    sys.exit(main())
