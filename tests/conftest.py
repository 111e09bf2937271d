from pathlib import Path

import pytest

CFP_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cfp"


@pytest.fixture
def cfp_root():
    """The real CFP set beside the checkout; tests that need it skip where it is absent."""
    if not (CFP_ROOT / "Protocol").is_dir():
        pytest.skip(f"CFP data not found at {CFP_ROOT}")
    return CFP_ROOT
