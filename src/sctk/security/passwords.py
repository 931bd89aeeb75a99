"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import re
import secrets
import string
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from sctk.errors import SctkError

MIN_LENGTH = 12
MAX_LENGTH = 256  # argon2 accepts more, but a megabyte "password" is a denial of service

# argon2-cffi's RFC 9106 low-memory profile: about 0.15 s per hash on the reference machine,
# which keeps offline guessing slow (see benchmarks/bench_auth.py).
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, type=Type.ID)


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    text = resources.files("sctk.security").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def policy_problem(username: str, password: str) -> str | None:
    """The first way PASSWORD breaks the policy, as a sentence, or None."""
    if len(password) < MIN_LENGTH:
        return f"The password must be at least {MIN_LENGTH} characters long."
    if len(password) > MAX_LENGTH:
        return f"The password must be at most {MAX_LENGTH} characters long."
    lowered = password.lower()
    if username and username.lower() in lowered:
        return "The password must not contain the username."
    # "password2024!" is as weak as "password": strip the digits and symbols people append
    stem = re.sub(r"[\d\W_]+$", "", lowered)
    if lowered in _common() or stem in _common() or len(set(lowered)) <= 3:
        return "The password is too common; choose a longer, less predictable one."
    return None


def check_policy(username: str, password: str) -> None:
    problem = policy_problem(username, password)
    if problem:
        raise SctkError(problem)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("sctk-timing-equaliser")


def burn_time(password: str) -> None:
    """Spend what a real verification costs, so that a login attempt on an unknown user
    takes as long as one on a real user and timing does not reveal which usernames exist."""
    verify_password(_dummy_hash(), password)


def generate_password(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if policy_problem("", candidate) is None:
            return candidate
