"""Minting and verifying user JWTs: every refusal is an InvalidToken with a stable reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from nanotypedb.auth.tokens import TokenProblem, TokenVerifier, mint_token
from nanotypedb.errors import BadRequest, ConfigError, InvalidToken

SECRET = "test-secret-" + "x" * 32
OTHER_SECRET = "other-secret-" + "y" * 32


@pytest.fixture(scope="module")
def jwks(ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    return {"keys": [_jwk(kid, key.public_key()) for kid, key in ec_keys.items()]}


def _jwk(kid: str, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(key, as_dict=True), "kid": kid, "use": "sig"}


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built without PyJWT, which refuses to sign the attacks below."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _refusal(verifier: TokenVerifier, token: str) -> TokenProblem:
    """Why the verifier refused the token; the token never appears in the error."""
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.code == "InvalidToken"
    assert not token or token not in caught.value.message
    return TokenProblem(caught.value.details["reason"])


def test_hs256_round_trip() -> None:
    token = mint_token(SECRET, "user-1", ttl=timedelta(minutes=5))

    claims = TokenVerifier(SECRET).verify(token)

    assert claims["sub"] == "user-1"
    assert claims["exp"] - claims["iat"] == 300
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_mint_sets_audience_issuer_and_extra_claims() -> None:
    token = mint_token(SECRET, "u", audience="app", issuer="me", extra_claims={"role": "editor"})

    claims = TokenVerifier(SECRET, audience="app", issuer="me").verify(token)

    assert (claims["aud"], claims["iss"], claims["role"]) == ("app", "me", "editor")


def test_mint_refuses_extra_claims_that_clash_with_its_arguments() -> None:
    with pytest.raises(BadRequest):
        mint_token(SECRET, "u", extra_claims={"sub": "admin"})


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_mint_refuses_a_lifetime_that_is_not_positive(ttl: timedelta) -> None:
    with pytest.raises(BadRequest):
        mint_token(SECRET, "u", ttl=ttl)


def test_mint_refuses_an_empty_user_id() -> None:
    with pytest.raises(BadRequest):
        mint_token(SECRET, "")


def test_a_short_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TokenVerifier("short")
    with pytest.raises(ConfigError):
        mint_token("short", "u")


def test_expired_tokens_are_refused() -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.EXPIRED


def test_leeway_tolerates_small_clock_skew() -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")

    assert TokenVerifier(SECRET).verify(token)["sub"] == "user-1"
    assert _refusal(TokenVerifier(SECRET, leeway=timedelta(0)), token) is TokenProblem.EXPIRED


def test_tokens_issued_in_the_future_are_refused() -> None:
    token = jwt.encode(_claims(nbf=int(time.time()) + 120), SECRET, algorithm="HS256")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.NOT_YET_VALID


def test_a_wrong_secret_is_a_bad_signature() -> None:
    token = mint_token(OTHER_SECRET, "u")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.BAD_SIGNATURE


def test_a_wrong_audience_is_refused() -> None:
    token = mint_token(SECRET, "u", audience="other-app")

    assert _refusal(TokenVerifier(SECRET, audience="app"), token) is TokenProblem.WRONG_AUDIENCE


def test_a_token_with_an_audience_is_refused_when_none_is_configured() -> None:
    token = mint_token(SECRET, "u", audience="app")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.WRONG_AUDIENCE


def test_a_token_without_audience_is_refused_when_one_is_configured() -> None:
    token = mint_token(SECRET, "u")

    assert _refusal(TokenVerifier(SECRET, audience="app"), token) is TokenProblem.MISSING_CLAIM


def test_a_wrong_issuer_is_refused() -> None:
    token = mint_token(SECRET, "u", issuer="someone-else")

    assert _refusal(TokenVerifier(SECRET, issuer="me"), token) is TokenProblem.WRONG_ISSUER


@pytest.mark.parametrize("claims", [_claims(sub=None), _claims(exp=None)])
def test_tokens_need_sub_and_exp(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.MISSING_CLAIM


def test_an_empty_sub_is_refused() -> None:
    token = jwt.encode(_claims(sub=""), SECRET, algorithm="HS256")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.MISSING_CLAIM


def test_a_sub_that_is_not_a_string_is_refused() -> None:
    token = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims(sub=42), SECRET.encode())

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.INVALID_CLAIM


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = _hand_made({"alg": alg, "typ": "JWT"}, _claims(), hmac_key=None)

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.UNSUPPORTED_ALGORITHM


def test_algorithms_outside_the_allow_list_are_refused() -> None:
    token = jwt.encode(_claims(), SECRET + "-longer-for-hs512" * 4, algorithm="HS512")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "a.b"])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.MALFORMED


def test_rs256_is_verified_with_the_configured_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")

    claims = TokenVerifier(SECRET, public_key_pem=_public_pem(rsa_key)).verify(token)

    assert claims["sub"] == "user-1"


def test_rs256_is_refused_without_a_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")

    assert _refusal(TokenVerifier(SECRET), token) is TokenProblem.UNSUPPORTED_ALGORITHM


def test_rs256_signed_by_another_key_is_a_bad_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), other, algorithm="RS256")
    verifier = TokenVerifier(SECRET, public_key_pem=_public_pem(rsa_key))

    assert _refusal(verifier, token) is TokenProblem.BAD_SIGNATURE


def test_es256_is_refused_when_the_pem_is_an_rsa_key(
    rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]
) -> None:
    token = jwt.encode(_claims(), ec_keys["k1"], algorithm="ES256")
    verifier = TokenVerifier(SECRET, public_key_pem=_public_pem(rsa_key))

    assert _refusal(verifier, token) is TokenProblem.UNSUPPORTED_ALGORITHM


def test_hs256_is_still_accepted_when_a_public_key_is_configured(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(SECRET, public_key_pem=_public_pem(rsa_key))

    assert verifier.verify(mint_token(SECRET, "u"))["sub"] == "u"


def test_hs256_keyed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    # Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    pem = _public_pem(rsa_key)
    token = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims(), hmac_key=pem.encode())

    verifier = TokenVerifier(SECRET, public_key_pem=pem)

    assert _refusal(verifier, token) is TokenProblem.BAD_SIGNATURE


def test_es256_picks_the_jwks_key_by_kid(ec_keys: dict[str, ec.EllipticCurvePrivateKey], jwks: dict[str, Any]) -> None:
    verifier = TokenVerifier(SECRET, jwks=jwks)

    for kid, key in ec_keys.items():
        token = jwt.encode(_claims(sub=kid), key, algorithm="ES256", headers={"kid": kid})
        assert verifier.verify(token)["sub"] == kid


def test_es256_with_the_kid_of_another_key_is_a_bad_signature(
    ec_keys: dict[str, ec.EllipticCurvePrivateKey], jwks: dict[str, Any]
) -> None:
    token = jwt.encode(_claims(), ec_keys["k2"], algorithm="ES256", headers={"kid": "k1"})

    assert _refusal(TokenVerifier(SECRET, jwks=jwks), token) is TokenProblem.BAD_SIGNATURE


def test_es256_with_an_unknown_kid_is_refused(
    ec_keys: dict[str, ec.EllipticCurvePrivateKey], jwks: dict[str, Any]
) -> None:
    token = jwt.encode(_claims(), ec_keys["k1"], algorithm="ES256", headers={"kid": "k9"})

    assert _refusal(TokenVerifier(SECRET, jwks=jwks), token) is TokenProblem.UNKNOWN_KID


def test_es256_without_a_kid_is_refused_when_only_a_jwks_is_configured(
    ec_keys: dict[str, ec.EllipticCurvePrivateKey], jwks: dict[str, Any]
) -> None:
    token = jwt.encode(_claims(), ec_keys["k1"], algorithm="ES256")

    assert _refusal(TokenVerifier(SECRET, jwks=jwks), token) is TokenProblem.UNKNOWN_KID


def test_rs256_with_the_kid_of_an_es256_key_is_refused(rsa_key: rsa.RSAPrivateKey, jwks: dict[str, Any]) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})

    verifier = TokenVerifier(SECRET, jwks=jwks)

    assert _refusal(verifier, token) is TokenProblem.UNSUPPORTED_ALGORITHM


def test_jwks_skips_keys_it_cannot_use(ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    usable = _jwk("k1", ec_keys["k1"].public_key())
    jwks = {"keys": [{**usable, "kid": "enc", "use": "enc"}, {"kty": "oct", "k": "c2VjcmV0"}, usable]}
    token = jwt.encode(_claims(), ec_keys["k1"], algorithm="ES256", headers={"kid": "enc"})

    verifier = TokenVerifier(SECRET, jwks=jwks)

    assert _refusal(verifier, token) is TokenProblem.UNKNOWN_KID


def test_from_files_reads_a_jwks_file(
    tmp_path: Path, ec_keys: dict[str, ec.EllipticCurvePrivateKey], jwks: dict[str, Any]
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    token = jwt.encode(_claims(), ec_keys["k2"], algorithm="ES256", headers={"kid": "k2"})

    verifier = TokenVerifier.from_files(SECRET, None, path, None, None)

    assert verifier.verify(token)["sub"] == "user-1"


def test_from_files_reads_a_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "public.pem"
    path.write_text(_public_pem(rsa_key))
    token = jwt.encode(_claims(aud="app"), rsa_key, algorithm="RS256")

    verifier = TokenVerifier.from_files(SECRET, public_key_path=path, audience="app")

    assert verifier.verify(token)["aud"] == "app"


def test_from_files_reports_missing_or_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.pem").write_text("not a key")

    with pytest.raises(ConfigError):
        TokenVerifier.from_files(SECRET, jwks_path=tmp_path / "missing.json")
    with pytest.raises(ConfigError):
        TokenVerifier.from_files(SECRET, jwks_path=tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        TokenVerifier.from_files(SECRET, public_key_path=tmp_path / "bad.pem")


@pytest.mark.parametrize("jwks", [{}, {"keys": "k1"}, {"keys": []}, {"keys": [{"kty": "oct"}]}])
def test_a_jwks_without_usable_keys_is_a_config_error(jwks: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TokenVerifier(SECRET, jwks=jwks)


def test_a_pem_on_an_unsupported_curve_is_a_config_error() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    with pytest.raises(ConfigError):
        TokenVerifier(SECRET, public_key_pem=pem.decode())


def test_a_token_names_its_environment_and_is_refused_by_another() -> None:
    token = mint_token(SECRET, "alice", environment="staging")
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["env"] == "staging"
    assert TokenVerifier(SECRET, environment="staging").verify(token)["sub"] == "alice"
    assert TokenVerifier(SECRET).verify(token)["sub"] == "alice"  # a verifier of no environment checks none
    with pytest.raises(InvalidToken) as raised:
        TokenVerifier(SECRET, environment="dev").verify(token)
    assert raised.value.details == {"reason": TokenProblem.WRONG_ENVIRONMENT.value}


def test_an_hs256_token_without_env_is_a_dev_token() -> None:
    token = mint_token(SECRET, "alice")
    assert TokenVerifier(SECRET, environment="dev").verify(token)["sub"] == "alice"
    with pytest.raises(InvalidToken):
        TokenVerifier(SECRET, environment="staging").verify(token)


def test_env_is_an_argument_not_an_extra_claim() -> None:
    with pytest.raises(BadRequest):
        mint_token(SECRET, "alice", extra_claims={"env": "prod"})
