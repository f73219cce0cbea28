"""governance/ stands alone: no ML stack, no other part of the project."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_governance_imports_no_ml_code_and_no_other_part():
    probe = ("import sys, pkgutil, importlib, governance\n"
             "for module in pkgutil.walk_packages(governance.__path__, 'governance.'):\n"
             "    importlib.import_module(module.name)\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', "
             "'eval', 'idadapter'}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
