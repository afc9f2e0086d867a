"""agent.intake.files: the file intake never blocks on a FIFO or a device, and says why it skipped one."""

import os
import threading

from agent.intake.files import iter_files


def test_a_fifo_in_a_folder_is_skipped_not_waited_on(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    os.mkfifo(str(tmp_path / "b.fifo"))
    got = []
    t = threading.Thread(target=lambda: got.extend(iter_files([str(tmp_path)])), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the walk blocked on the FIFO"
    rows = {os.path.basename(p): (data, err) for p, data, err in got}
    assert rows["a.png"] == (b"\x89PNG\r\n\x1a\n", None)
    assert rows["b.fifo"] == (None, "not a regular file")


def test_a_device_named_on_the_command_line_is_refused(tmp_path):
    assert list(iter_files(["/dev/zero"])) == [("/dev/zero", None, "not a regular file")]


def test_missing_and_oversized_files_say_why(tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 101)
    (path, data, err), = iter_files([str(big)], max_bytes=100)
    assert data is None and "exceeds limit 100" in err
    (path, data, err), = iter_files([str(tmp_path / "none.jpg")])
    assert data is None and err.startswith("cannot read")
