"""The `dia` command's answers to bad arguments: an error line and exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dia.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_data_check_on_a_data_root_that_is_not_there(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DIA_DATA_ROOT", raising=False)
    assert main(["data", "check", "--data-root", str(tmp_path / "typo")]) == 2
    assert f"--data-root {tmp_path / 'typo'} is not a folder" in capsys.readouterr().err
    # the default root of a fresh clone: the table of what to get, with a note why it is empty
    monkeypatch.setattr("dia.data.registry.REPO_ROOT", tmp_path)
    assert main(["data", "check", "--results-root", str(tmp_path / "results")]) == 0
    out = capsys.readouterr()
    assert f"default data root {tmp_path / 'data'} does not exist yet" in out.err
    assert "MISSING" in out.out


def test_table_refuses_a_results_root_or_readme_that_is_not_there(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["table", "--results-root", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    root = tmp_path / "results"
    root.mkdir()
    assert main(["table", "--results-root", str(root), "--readme", str(tmp_path / "no.md")]) == 2
    assert "--readme" in capsys.readouterr().err and not (root / "tables").exists()
    from dia.report import README_END, README_START

    readme = tmp_path / "README.md"
    for text, says in ((f"{README_END}\n{README_START}\n", "in that order (it has 1 and 1)"),
                       (f"{README_START}{README_END}\n" * 2, "once each"),
                       ("no markers\n", "(it has 0 and 0)")):
        readme.write_text(text)
        assert main(["table", "--results-root", str(root), "--readme", str(readme)]) == 2
        assert says in capsys.readouterr().err and not (root / "tables").exists()  # not written
    assert main(["table", "--results-root", str(root)]) == 0  # no runs yet: said, then written
    assert "no runs under" in capsys.readouterr().err and (root / "tables" / "auc.md").is_file()
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\nrest\n")
    (tmp_path / "link.md").symlink_to(readme)
    assert main(["table", "--results-root", str(root), "--readme", str(tmp_path / "link.md")]) == 0
    assert (tmp_path / "link.md").is_symlink()  # written through the link, not replacing it
    spliced = readme.read_text()
    assert spliced.startswith(f"intro\n{README_START}\nAUC, image level") and "old" not in spliced
    assert spliced.endswith(f"{README_END}\nrest\n")


def test_table_on_a_results_root_it_cannot_write_to(tmp_path, capsys, monkeypatch):
    root = tmp_path / "results"
    root.mkdir()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(root / "tables" / "auc.csv"))

    monkeypatch.setattr("dia.report.write_tables", read_only)
    assert main(["table", "--results-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read or write {root / 'tables' / 'auc.csv'}: Permission denied; give" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_standard_output_that_cannot_take_the_result_is_an_error_line(tmp_path):
    # stdout redirected to a file on a full disk: one line saying so, not a traceback of print
    # (nor, for a short result, Python's "Exception ignored" at exit and status 120)
    check = ["data", "check", "--data-root", str(tmp_path), "--results-root", str(tmp_path)]
    for args in (["config", "smoke"], check):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "dia", *args], stdout=full, text=True,
                                  stderr=subprocess.PIPE, cwd=REPO, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr == ("error: cannot write to standard output (No space left on device): "
                               "redirect it to a file on a disk with room, or leave it on the "
                               "terminal\n")
