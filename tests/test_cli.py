"""The `dia` command's answers to bad arguments: an error line and exit 2, nothing written."""

from __future__ import annotations

from dia.cli import main


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
    assert main(["table", "--results-root", str(root)]) == 0  # no runs yet: said, then written
    assert "no runs under" in capsys.readouterr().err and (root / "tables" / "auc.md").is_file()


def test_table_on_a_results_root_it_cannot_write_to(tmp_path, capsys, monkeypatch):
    root = tmp_path / "results"
    root.mkdir()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(root / "tables" / "auc.csv"))

    monkeypatch.setattr("dia.report.write_tables", read_only)
    assert main(["table", "--results-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read or write {root / 'tables' / 'auc.csv'}: Permission denied; give" in err
