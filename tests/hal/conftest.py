import pytest

from tests.hal.rigs import RIGS, loadable


@pytest.fixture(params=sorted(RIGS))
def rig(request, tmp_path):
    """A rig for each backend that can load here; the others are skipped with the reason."""
    ok, reason = loadable(request.param)
    if not ok:
        pytest.skip("backend %s cannot load: %s" % (request.param, reason))
    r = RIGS[request.param](tmp_path)
    yield r
    r.close()
