from pathlib import Path

import pytest

from datafiniti_loader import AuthenticationError
from datafiniti_loader.config import resolve_api_url, resolve_cache_dir, resolve_token

API = "https://api.datafiniti.co/v3"


def test_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFINITI_API_TOKEN", "from-env")
    assert resolve_token("from-arg", API) == "from-arg"
    assert resolve_token(None, API) == "from-env"


def test_netrc_entry_for_the_api_host(isolated_env: Path) -> None:
    netrc = isolated_env / ".netrc"
    netrc.write_text("machine api.datafiniti.co login from-netrc password ''\n")
    netrc.chmod(0o600)
    assert resolve_token(None, API) == "from-netrc"


def test_no_token_says_how_to_set_one() -> None:
    with pytest.raises(AuthenticationError) as caught:
        resolve_token(None, API)
    message = str(caught.value)
    assert "DATAFINITI_API_TOKEN" in message and "token=" in message and ".netrc" in message


def test_api_url_order_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_api_url(None) == API
    monkeypatch.setenv("DATAFINITI_API_URL", "http://127.0.0.1:9/v3/")
    assert resolve_api_url(None) == "http://127.0.0.1:9/v3"
    assert resolve_api_url("https://other/v3") == "https://other/v3"
    with pytest.raises(ValueError, match="http"):
        resolve_api_url("ftp://nope")


def test_cache_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_cache_dir(False) is None
    assert resolve_cache_dir(tmp_path) == tmp_path
    monkeypatch.setenv("DATAFINITI_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DATAFINITI_CACHE_DIR")
    assert "datafiniti-loader" in str(resolve_cache_dir(None))
