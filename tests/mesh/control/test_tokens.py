"""Local bootstrap tokens: minted by the supervisor, consumed once by the control plane."""

from __future__ import annotations

import json

import pytest

from mesh.control import tokens

NOW = 1_700_000_000.0


def test_a_token_is_consumed_once_and_names_its_identity(tmp_path):
    directory = tmp_path / "ca" / "tokens"
    token = tokens.mint(directory, "bookinfo", "books", "books-v1.bookinfo", now=NOW)
    record = tokens.consume(directory, token, now=NOW + 1)
    assert (record.namespace, record.service_account, record.proxy_id) == ("bookinfo", "books", "books-v1.bookinfo")
    with pytest.raises(tokens.TokenError, match="unknown or already used"):
        tokens.consume(directory, token, now=NOW + 2)


def test_records_are_private_and_never_hold_the_token(tmp_path):
    directory = tmp_path / "ca" / "tokens"
    token = tokens.mint(directory, "bookinfo", "books", "books-v1.bookinfo", now=NOW)
    [record] = directory.iterdir()
    assert record.name == f"{tokens.digest(token)}.json"
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    assert oct(directory.stat().st_mode & 0o777) == "0o700" and oct(directory.parent.stat().st_mode & 0o777) == "0o700"
    assert token not in record.read_text()
    assert json.loads(record.read_text())["expiresAt"] == NOW + tokens.DEFAULT_TTL_S


def test_an_expired_token_is_refused_and_gone(tmp_path):
    token = tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=NOW, ttl_s=600)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.consume(tmp_path, token, now=NOW + 600)
    assert list(tmp_path.iterdir()) == []


def test_unknown_and_malformed_tokens_are_refused(tmp_path):
    tokens.mint(tmp_path, "bookinfo", "books", "books-v1.bookinfo", now=NOW)
    with pytest.raises(tokens.TokenError, match="unknown"):
        tokens.consume(tmp_path, "A" * 43, now=NOW)
    for bad in ("../../etc/passwd", "", "x" * 300, "short"):
        with pytest.raises(tokens.TokenError, match="malformed"):
            tokens.consume(tmp_path, bad, now=NOW)


def test_revoke_and_sweep(tmp_path):
    first = tokens.mint(tmp_path, "bookinfo", "books", "a", now=NOW, ttl_s=10)
    second = tokens.mint(tmp_path, "bookinfo", "books", "b", now=NOW, ttl_s=1000)
    assert tokens.revoke(tmp_path, first) and not tokens.revoke(tmp_path, first)
    third = tokens.mint(tmp_path, "bookinfo", "books", "c", now=NOW, ttl_s=10)
    assert tokens.sweep(tmp_path, now=NOW + 100) == 1
    assert tokens.consume(tmp_path, second, now=NOW + 100).proxy_id == "b"
    with pytest.raises(tokens.TokenError):
        tokens.consume(tmp_path, third, now=NOW + 100)
