"""AES-SIV through cryptography's AESSIV with our argument order: RFC 5297 Appendix A vectors.

NTS (RFC 8915 5.6) passes the associated data and then the nonce as the LAST S2V component; these vectors prove
that :func:`nts_client.aead_seal` builds the component list in that order and prepends the 16-byte SIV tag.
"""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from tests.lib.collection import nts_client

A1_KEY = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
A1_AD = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
A1_PLAINTEXT = bytes.fromhex("112233445566778899aabbccddee")
A1_OUTPUT = bytes.fromhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")

A2_KEY = bytes.fromhex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f")
A2_AD1 = bytes.fromhex("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100")
A2_AD2 = bytes.fromhex("102030405060708090a0")
A2_NONCE = bytes.fromhex("09f911029d74e35bd84156c5635688c0")
A2_PLAINTEXT = bytes.fromhex(
    "7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553"
)
A2_OUTPUT = bytes.fromhex(
    "7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17"
    "dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d"
)


def test_rfc5297_a1_deterministic():
    assert nts_client.aead_seal(A1_KEY, A1_PLAINTEXT, [A1_AD], None) == A1_OUTPUT
    assert nts_client.aead_open(A1_KEY, A1_OUTPUT, [A1_AD], None) == A1_PLAINTEXT


def test_rfc5297_a2_nonce_is_last_component():
    sealed = nts_client.aead_seal(A2_KEY, A2_PLAINTEXT, [A2_AD1, A2_AD2], A2_NONCE)
    assert sealed == A2_OUTPUT
    assert sealed[:16] == bytes.fromhex("7bdb6e3b432667eb06f4d14bff2fbd0f")  # the SIV tag comes first
    assert nts_client.aead_open(A2_KEY, A2_OUTPUT, [A2_AD1, A2_AD2], A2_NONCE) == A2_PLAINTEXT


def test_nonce_first_would_not_match_the_vector():
    """The wrong ordering (nonce before the AD) yields a different tag: the vector really pins the order."""
    wrong = nts_client.aead_seal(A2_KEY, A2_PLAINTEXT, [A2_NONCE, A2_AD1], A2_AD2)
    assert wrong != A2_OUTPUT
    with pytest.raises(InvalidTag):
        nts_client.aead_open(A2_KEY, A2_OUTPUT, [A2_NONCE, A2_AD1], A2_AD2)


@pytest.mark.parametrize("index", [0, 15, 16, len(A2_OUTPUT) - 1])
def test_any_flipped_bit_fails_authentication(index):
    tampered = bytearray(A2_OUTPUT)
    tampered[index] ^= 0x01
    with pytest.raises(InvalidTag):
        nts_client.aead_open(A2_KEY, bytes(tampered), [A2_AD1, A2_AD2], A2_NONCE)


def test_nts_request_shape_empty_plaintext_is_tag_only():
    """With no encrypted extension fields the ciphertext is exactly the 16-byte tag (RFC 8915 5.6)."""
    out = nts_client.aead_seal(bytes(32), b"", [b"packet bytes"], bytes(16))
    assert len(out) == 16
    assert nts_client.aead_open(bytes(32), out, [b"packet bytes"], bytes(16)) == b""
