"""A fast run of the ICAP fuzzer (tests/intake/icap/fuzz.py; the big one is bench/fuzz_icap.py):
mutated OPTIONS/RESPMOD/REQMOD messages never raise out of the parser or the service, never hang it,
and the service still answers valid requests correctly afterwards."""

from tests.intake.icap.fuzz import fuzz_live, fuzz_parser


def test_parser_fuzz():
    result = fuzz_parser(1500, seed=20261201)
    assert result["cases"] == 1500
    assert result["exceptions"] == 0 and result["hangs"] == 0, result["failures"]
    # The mutations reach every outcome: refused, parsed whole, and waiting for more.
    assert all(result["outcomes"][k] > 50 for k in ("error", "complete", "partial")), result["outcomes"]


def test_live_service_fuzz():
    result = fuzz_live(400, seed=20261201, check_every=100)
    assert result["cases"] == 400 and result["checks"] == 5  # each check: OPTIONS, a block and a 204
    assert result["exceptions"] == 0 and result["hangs"] == 0 and result["internal_errors"] == 0, result["failures"]
    assert result["answers"]["400"] > 50 and result["answers"]["200"] > 10 and result["answers"]["204"] > 10
