"""Where fastbase keeps things: FASTBASE_HOME, config.ini overrides, mirror and offline settings."""
import pytest

from fastbase.core import Config, ConfigError, get_config


def test_home_from_environment(fastbase_home):
    cfg = get_config()
    assert cfg.home == fastbase_home
    assert cfg.data_path == fastbase_home / "data"
    assert cfg.model_path == fastbase_home / "models"
    assert cfg.archive_path == fastbase_home / "archive"
    assert cfg.mirror is None and cfg.offline is False


def test_default_home_is_dot_fastbase(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTBASE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config().home == tmp_path / ".fastbase"


def test_config_file_overrides_single_folders(fastbase_home, tmp_path):
    big = tmp_path / "big"
    (fastbase_home / "config.ini").write_text(f"[paths]\ndata = {big}\nmodels = my_models\n")
    cfg = get_config()
    assert cfg.data_path == big
    assert cfg.model_path == fastbase_home / "my_models"
    assert cfg.archive_path == fastbase_home / "archive"


def test_config_file_named_by_env(monkeypatch, tmp_path):
    other = tmp_path / "other.ini"
    other.write_text("[network]\nmirror = https://mirror.example/\noffline = yes\n")
    monkeypatch.setenv("FASTBASE_CONFIG", str(other))
    cfg = get_config()
    assert cfg.mirror == "https://mirror.example/" and cfg.offline is True


def test_environment_wins_over_file(fastbase_home, monkeypatch):
    (fastbase_home / "config.ini").write_text("[network]\nmirror = https://a/\noffline = true\n")
    monkeypatch.setenv("FASTBASE_MIRROR", "https://b/")
    monkeypatch.setenv("FASTBASE_OFFLINE", "0")
    cfg = get_config()
    assert cfg.mirror == "https://b/" and cfg.offline is False


def test_bad_offline_value_names_it(monkeypatch):
    monkeypatch.setenv("FASTBASE_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match="FASTBASE_OFFLINE.*'maybe'"):
        _ = get_config().offline


def test_unknown_path_key_is_an_error(fastbase_home):
    (fastbase_home / "config.ini").write_text("[paths]\ndatas = /x\n")
    with pytest.raises(ConfigError, match="datas"):
        get_config()


def test_unreadable_config_names_file(fastbase_home):
    (fastbase_home / "config.ini").write_text("not an ini file\n")
    with pytest.raises(ConfigError, match="config.ini"):
        get_config()
