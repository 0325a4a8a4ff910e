"""The single-cell core in an environment without torch (issue 26): run by ``.ci/run``.

Not a pytest module (the suite needs torch): ``.ci/run`` installs the package alone into a
fresh virtual environment and runs this file there. It checks that torch is absent, that
the core works (``calibrate_pca``, ``calibrate_leiden``, ``rank_genes_groups_split``, the
``sc-noise2self denoise`` command), and that a step that needs torch says which extra to
install, before any work.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path


def main() -> int:
    assert importlib.util.find_spec("torch") is None, "torch is installed: not a core install"
    warnings.filterwarnings("ignore")
    import sc_noise2self as n2s
    from sc_noise2self import cli

    adata = n2s.simulation.simulate_counts(800, 300, (0.6, 0.4), depth_sd=0.5,
                                           random_state=0)
    n2s.tl.calibrate_pca(adata, max_comps=10)
    n2s.tl.calibrate_leiden(adata)
    n2s.tl.rank_genes_groups_split(adata)
    assert adata.uns["noise2self"]["best"] >= 0
    assert adata.obs["noise2self_leiden"].nunique() >= 1
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.h5ad"
        assert cli.main(["denoise", "--dataset", "synthetic", "--out", str(out),
                         "--max-comps", "20"]) == 0
        assert out.exists()
    try:
        n2s.tl.calibrate_autoencoder(adata, max_epochs=1)
    except ImportError as error:
        assert "[torch]" in str(error), error
    else:
        raise AssertionError("calibrate_autoencoder ran without torch")
    print("the single-cell core works without torch; torch steps name the extra")
    return 0


if __name__ == "__main__":
    sys.exit(main())
