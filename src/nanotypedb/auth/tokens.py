"""User JWTs: mint HS256 tokens with the server secret, and verify HS256, RS256 and ES256 tokens.

The key is chosen from a fixed table by the token's `alg`, so a token can never pick how its own
signature is checked (no `alg: none`, no HS256 keyed with a public key).
"""

from __future__ import annotations

import enum
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.exceptions import InvalidSubjectError  # PyJWT >= 2.10; not re-exported by `jwt`

from ..errors import BadRequest, ConfigError, InvalidToken
from ..storage.environments import DEFAULT_ENVIRONMENT

DEFAULT_TTL = timedelta(hours=1)
DEFAULT_LEEWAY = timedelta(seconds=30)
"""Clock skew tolerated between the token's issuer and this server."""

HS256 = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
ACCEPTED_ALGORITHMS = (HS256, *PUBLIC_KEY_ALGORITHMS)
REQUIRED_CLAIMS = ("exp", "sub")
ENV_CLAIM = "env"
"""The environment a token is for; an HS256 token without it is a `dev` token (as every token was before)."""

# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output. PyJWT warns below it.
_MIN_SECRET_BYTES = 32
# Set by mint_token from its arguments, so extra_claims cannot silently override them.
_RESERVED_CLAIMS = frozenset({"sub", "iat", "exp", "aud", "iss", ENV_CLAIM})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class TokenProblem(enum.StrEnum):
    """Why a token was refused; sent as `details.reason` of the InvalidToken error."""

    MALFORMED = "malformed"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    WRONG_ENVIRONMENT = "wrong_environment"


def mint_token(
    secret: str,
    user_id: str,
    *,
    ttl: timedelta = DEFAULT_TTL,
    audience: str | None = None,
    issuer: str | None = None,
    environment: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """An HS256 token for `user_id`, signed with the server secret and valid for `ttl` (in `environment`:
    its `env` claim; without it, the token is for `dev`)."""
    _check_secret(secret)
    if not user_id:
        raise BadRequest("The user id is empty: a token needs a non-empty `sub`.")
    if ttl <= timedelta(0):
        raise BadRequest(f"The token lifetime is {ttl}: pass a positive ttl.")
    extra = extra_claims or {}
    if clash := sorted(_RESERVED_CLAIMS & extra.keys()):
        raise BadRequest(f"extra_claims sets {clash}: pass these as arguments of mint_token.")
    now = datetime.now(UTC)
    claims = {**extra, "sub": user_id, "iat": now, "exp": now + ttl}
    claims |= {k: v for k, v in (("aud", audience), ("iss", issuer), (ENV_CLAIM, environment)) if v is not None}
    return jwt.encode(claims, secret, algorithm=HS256)


# Verified tokens remembered at once; past this the memory is cleared and refilled.
_CACHE_SIZE = 10_000


class TokenVerifier:
    """Checks a user's JWT and returns its claims, or raises InvalidToken saying what was wrong.

    HS256 tokens are checked with the server secret. RS256 and ES256 tokens are accepted only
    when a public key or a JWKS is configured: a token with a `kid` is checked with that JWKS
    key (an unknown kid is refused), a token without one with the PEM key.
    Every token needs `exp` and `sub`. When `audience` is set, the token's `aud` must name it;
    when it is not set, a token that carries an `aud` is refused (PyJWT's rule, kept on purpose:
    a token minted for another service must not work here).
    When `environment` is set, a token whose `env` claim names another environment is refused. The
    secret is shared by every environment of a data directory, so an HS256 token without `env` counts
    as a `dev` token; an RS256/ES256 token without one is accepted (its provider is configured per server).
    """

    def __init__(
        self,
        secret: str,
        *,
        public_key_pem: str | None = None,
        jwks: dict[str, Any] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        environment: str | None = None,
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> None:
        _check_secret(secret)
        self._secret = secret
        self._cache: dict[str, dict[str, Any]] = {}
        self._public_key = _load_pem(public_key_pem) if public_key_pem is not None else None
        self._jwks = _load_jwks(jwks) if jwks is not None else {}
        self.audience = audience
        self.issuer = issuer
        self.environment = environment
        self.leeway = leeway

    @classmethod
    def from_files(
        cls,
        secret: str,
        public_key_path: Path | None = None,
        jwks_path: Path | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        environment: str | None = None,
    ) -> TokenVerifier:
        """A verifier whose public key comes from a PEM file and/or a JWKS JSON file."""
        pem = _read_text(public_key_path) if public_key_path is not None else None
        jwks = _read_jwks(jwks_path) if jwks_path is not None else None
        return cls(secret, public_key_pem=pem, jwks=jwks, audience=audience, issuer=issuer, environment=environment)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once its signature, expiry, audience and issuer are checked.

        A verified token is remembered until its `exp`: clients send the same token with
        every request, and checking a signature costs more than the rest of a small call.
        """
        cached = self._cache.get(token)
        if cached is not None and cached["exp"] > time.time():
            return cached
        claims = self._verify(token)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()  # many distinct live tokens: start over rather than track age
        self._cache[token] = claims
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        header = _read_header(token)
        alg = header.get("alg")
        key = self._key_for(alg, header.get("kid"))
        claims = self._decode(token, key, str(alg))
        if not claims["sub"]:
            raise _refuse(TokenProblem.MISSING_CLAIM, "The token's `sub` claim is empty.")
        self._check_environment(claims, str(alg))
        return claims

    def _check_environment(self, claims: dict[str, Any], alg: str) -> None:
        claimed = claims.get(ENV_CLAIM, DEFAULT_ENVIRONMENT if alg == HS256 else None)
        if self.environment is None or claimed is None or claimed == self.environment:
            return
        message = (
            f"The token is for another environment than {self.environment!r}, the one this server serves: "
            f"mint one for it (`nanotypedb token --env {self.environment}`)."
        )
        raise _refuse(TokenProblem.WRONG_ENVIRONMENT, message)

    def _key_for(self, alg: object, kid: str | None) -> str | PublicKey:
        if alg == HS256:
            return self._secret
        if alg not in PUBLIC_KEY_ALGORITHMS:
            accepted = ", ".join(ACCEPTED_ALGORITHMS)
            message = f"The token is signed with {str(alg)[:16]!r}; this server accepts {accepted}."
            raise _refuse(TokenProblem.UNSUPPORTED_ALGORITHM, message)
        if self._jwks and (kid is not None or self._public_key is None):
            return self._jwk_for(str(alg), kid)
        if self._public_key is not None and self._public_key[0] == alg:
            return self._public_key[1]
        message = f"The token is signed with {alg}, but no {alg} public key or JWKS is configured."
        raise _refuse(TokenProblem.UNSUPPORTED_ALGORITHM, message)

    def _jwk_for(self, alg: str, kid: str | None) -> PublicKey:
        if kid is None:
            message = "The token has no `kid` header, which is needed to pick a key from the JWKS."
            raise _refuse(TokenProblem.UNKNOWN_KID, message)
        jwk = self._jwks.get(kid)
        if jwk is None:
            message = f"No key in the JWKS has the token's kid {kid[:64]!r}: refresh the JWKS."
            raise _refuse(TokenProblem.UNKNOWN_KID, message)
        if jwk.algorithm_name != alg:
            message = f"The JWKS key {kid!r} is for {jwk.algorithm_name}, but the token says {alg}."
            raise _refuse(TokenProblem.UNSUPPORTED_ALGORITHM, message)
        key: PublicKey = jwk.key
        return key

    def _decode(self, token: str, key: str | PublicKey, alg: str) -> dict[str, Any]:
        # algorithms=[alg] comes from the token, which PyJWT warns against; it is safe here
        # because _key_for returns only a key that belongs to that very algorithm.
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise self._explain(exc) from exc

    def _explain(self, exc: jwt.PyJWTError) -> InvalidToken:
        # PyJWT's own messages stay in the exception chain for the server log.
        if isinstance(exc, jwt.MissingRequiredClaimError):
            message = f"The token has no `{exc.claim}` claim."
            return _refuse(TokenProblem.MISSING_CLAIM, message)
        if isinstance(exc, jwt.InvalidAudienceError):
            return _refuse(TokenProblem.WRONG_AUDIENCE, self._audience_message())
        if isinstance(exc, jwt.InvalidIssuerError):
            message = f"The token's `iss` is not {self.issuer!r}, the issuer this server trusts."
            return _refuse(TokenProblem.WRONG_ISSUER, message)
        for cls, problem, message in _PYJWT_PROBLEMS:
            if isinstance(exc, cls):
                return _refuse(problem, message)
        return _refuse(TokenProblem.MALFORMED, "The token could not be read as a signed JWT.")

    def _audience_message(self) -> str:
        if self.audience is None:
            return "The token has an `aud` claim, but this server has no audience configured."
        return f"The token's `aud` does not include {self.audience!r}, this server's audience."


# Checked in order: the first class the PyJWT error is an instance of gives the reason.
_PYJWT_PROBLEMS: tuple[tuple[type[jwt.PyJWTError], TokenProblem, str], ...] = (
    (jwt.ExpiredSignatureError, TokenProblem.EXPIRED, "The token has expired: get a new one."),
    (
        jwt.ImmatureSignatureError,
        TokenProblem.NOT_YET_VALID,
        "The token is not valid yet (`iat` or `nbf` is in the future): check the issuer's clock.",
    ),
    (
        jwt.InvalidSignatureError,
        TokenProblem.BAD_SIGNATURE,
        "The token's signature does not match: it was signed with another key or altered.",
    ),
    (
        jwt.InvalidAlgorithmError,
        TokenProblem.UNSUPPORTED_ALGORITHM,
        "The token's algorithm does not match the configured key.",
    ),
    (
        jwt.InvalidKeyError,
        TokenProblem.BAD_SIGNATURE,
        "The token cannot be checked with the configured key.",
    ),
    (
        InvalidSubjectError,
        TokenProblem.INVALID_CLAIM,
        "The token's `sub` claim is not a string.",
    ),
    (
        jwt.InvalidIssuedAtError,
        TokenProblem.INVALID_CLAIM,
        "The token's `iat` claim is not a number.",
    ),
    (
        jwt.DecodeError,
        TokenProblem.MALFORMED,
        "The token is not a JWT: expected three base64url parts separated by dots.",
    ),
)


def _refuse(problem: TokenProblem, message: str) -> InvalidToken:
    return InvalidToken(message, details={"reason": problem.value})


def _read_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        message = "The token is not a JWT: expected three base64url parts separated by dots."
        raise _refuse(TokenProblem.MALFORMED, message) from exc


def _check_secret(secret: str) -> None:
    size = len(secret.encode())
    if size < _MIN_SECRET_BYTES:
        raise ConfigError(
            f"The server secret is {size} bytes; HS256 needs at least {_MIN_SECRET_BYTES}. "
            "Generate one with secrets.token_urlsafe(32)."
        )


def _load_pem(pem: str) -> tuple[str, PublicKey]:
    """The algorithm a PEM public key serves, and the key."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        message = "The public key is not a PEM public key ('-----BEGIN PUBLIC KEY-----')."
        raise ConfigError(message) from exc
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ConfigError("The public key must be an RSA key (RS256) or an EC P-256 key (ES256).")


def _load_jwks(jwks: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The RS256 and ES256 signing keys of a JWKS, by kid; other keys are skipped."""
    raw_keys = jwks.get("keys")
    if not isinstance(raw_keys, list):
        raise ConfigError('The JWKS is not a JSON object with a "keys" list.')
    keys = {jwk.key_id: jwk for raw in raw_keys if (jwk := _load_jwk(raw)) and jwk.key_id}
    if not keys:
        raise ConfigError("The JWKS has no RS256 or ES256 signing key with a `kid`.")
    return keys


def _load_jwk(raw: object) -> jwt.PyJWK | None:
    # Providers publish encryption keys and other key types next to their signing keys.
    if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
        return None
    if raw.get("kty") not in ("RSA", "EC"):
        return None
    try:
        jwk = jwt.PyJWK(raw)
    except jwt.PyJWTError as exc:
        raise ConfigError(f"The JWKS key {raw.get('kid')!r} cannot be loaded: {exc}") from exc
    return jwk if jwk.algorithm_name in PUBLIC_KEY_ALGORITHMS else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from exc


def _read_jwks(path: Path) -> dict[str, Any]:
    try:
        jwks = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}.") from exc
    if not isinstance(jwks, dict):
        raise ConfigError(f'{path} is not a JWKS: expected a JSON object with a "keys" list.')
    return jwks
