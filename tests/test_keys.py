import pytest

from enumeration.connectors.keys import decode_key, encode_key, key_hash


@pytest.mark.parametrize(
    "raw",
    [
        b"/plain/path.txt",
        "/unicodé/目录/📁 x".encode(),
        b"/latin1-\xff\xfe.bin",
        b"base64:looks-like-the-prefix",
        b'/with\nnewline\tand\\backslash"quote',
    ],
)
def test_keys_round_trip_losslessly(raw):
    assert decode_key(encode_key(raw)) == raw


def test_utf8_keys_stay_readable():
    assert encode_key("/données/a b.txt".encode()) == "/données/a b.txt"


def test_non_utf8_keys_are_marked_and_distinct():
    key = encode_key(b"/bad-\xff")
    assert key.startswith("base64:")
    assert encode_key(b"/bad-\xfe") != key


def test_key_hash_is_stable_and_128_bits():
    assert key_hash(b"/a") == key_hash(b"/a")
    assert key_hash(b"/a") != key_hash(b"/b")
    assert len(key_hash(b"/a")) == 32
