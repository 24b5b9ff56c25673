#!/usr/bin/env python3
"""Builds cache-key bytes (key format 1) by hand and prints their SHA-256 digests.

This is an independent implementation of the format documented in
include/cacheserialize/serializer.hpp and cache_key.hpp, written with struct.pack only. The
digests it prints are hard-coded in tests/test_cache_key.cpp as golden vectors: if the C++ code
and this script agree, keys are the same bytes whatever the compiler, platform or process.

Usage:
    make_key_vectors.py                 print "name digest" lines
    make_key_vectors.py --check FILE    check that every digest appears in FILE
"""

import hashlib
import struct
import sys

# ---- values, in key mode ------------------------------------------------------------------------


def u64(n):
    return struct.pack(">Q", n)


def int_(n):
    return b"i" + struct.pack(">q", n)


def uint(n):
    return b"u" + u64(n)


def float_(x):
    if x != x:  # every NaN is the one quiet NaN in key mode
        return b"f" + u64(0x7FF8000000000000)
    if x == 0.0:  # -0.0 is +0.0 in key mode
        x = 0.0
    return b"f" + struct.pack(">d", x)


def bool_(b):
    return b"b" + (b"\x01" if b else b"\x00")


def str_(s):
    data = s.encode("utf-8")
    return b"s" + u64(len(data)) + data


def bytes_(data):
    return b"x" + u64(len(data)) + bytes(data)


def list_(items):
    return b"l" + u64(len(items)) + b"".join(items)


def map_(pairs):
    # Key mode: entries sorted by their encoded bytes (key first, so by the encoded key).
    entries = sorted(k + v for k, v in pairs)
    return b"m" + u64(len(entries)) + b"".join(entries)


def set_(items):
    return b"e" + u64(len(items)) + b"".join(sorted(items))


def tuple_(items):
    return b"t" + u64(len(items)) + b"".join(items)


def opt(value=None):
    return b"o\x00" if value is None else b"o\x01" + value


def record(fields):
    body = b"".join(fields)
    return b"r" + u64(len(body)) + body


IGNORED = b"-"

# ---- keys ---------------------------------------------------------------------------------------


def key(name, interface, version, inputs):
    out = b"CSK\x01" + str_(name) + str_(interface) + str_(version)
    out += uint(len(inputs))
    return out + b"".join(inputs)


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

VECTORS = [
    # KeySchema<int(int)>({"square", ""}, "1.0", {"n"}).make(5)
    ("square", key("square", "(n:int)->int", "1.0", [int_(5)])),
    # CacheKey({"ints", ""}, "1", -1, INT64_MIN, INT64_MAX, UINT64_MAX)
    ("ints", key("ints", "(int,int,int,uint)", "1",
                 [int_(-1), int_(INT64_MIN), int_(INT64_MAX), uint(UINT64_MAX)])),
    # CacheKey({"floats", ""}, "1", -0.0, NaN, 1.5)
    ("floats", key("floats", "(float,float,float)", "1",
                   [float_(-0.0), float_(float("nan")), float_(1.5)])),
    # CacheKey({"concat", ""}, "1", "ab", "c") and ("a", "bc")
    ("concat_ab_c", key("concat", "(str,str)", "1", [str_("ab"), str_("c")])),
    ("concat_a_bc", key("concat", "(str,str)", "1", [str_("a"), str_("bc")])),
    # CacheKey({"nested", ""}, "1", map<string, vector<int>>{{"b", {1, -2}}, {"a", {}}, {"", {7}}})
    ("nested", key("nested", "(map<str,list<int>>)", "1", [map_([
        (str_("b"), list_([int_(1), int_(-2)])),
        (str_("a"), list_([])),
        (str_(""), list_([int_(7)])),
    ])])),
    # CacheKey({"umap", ""}, "1", unordered_map<string, int>{{"x", 1}, {"y", 2}, {"z", 3}})
    ("umap", key("umap", "(map<str,int>)", "1", [map_([
        (str_("z"), int_(3)), (str_("x"), int_(1)), (str_("y"), int_(2)),
    ])])),
    # CacheKey({"set", ""}, "1", set<int>{3, -1, 1}): bytes order puts -1 (0xff...) last
    ("set", key("set", "(set<int>)", "1", [set_([int_(3), int_(-1), int_(1)])])),
    # CacheKey({"optional", ""}, "1", optional<int>{}, optional<int>{42})
    ("optional", key("optional", "(opt<int>,opt<int>)", "1", [opt(), opt(int_(42))])),
    # CacheKey({"tuple", ""}, "1", tuple<int, string, bool>{7, "q", true}, pair<unsigned, double>{2, 0.5})
    ("tuple", key("tuple", "(tuple<int,str,bool>,tuple<uint,float>)", "1", [
        tuple_([int_(7), str_("q"), bool_(True)]),
        tuple_([uint(2), float_(0.5)]),
    ])),
    # CacheKey({"user", ""}, "1", Point{1, -2}) with serializer<Point>::name = "Point"
    ("user", key("user", "(Point)", "1", [record([int_(1), int_(-2)])])),
    # KeySchema<double(int, string, bool)>({"train", ""}, "2024-01", {"n", "log", "verbose"},
    #                                       {"log", "verbose"}).make(3, "/tmp/a", true)
    ("ignored", key("train", "(n:int,log:str,verbose:bool)->float", "2024-01",
                    [int_(3), IGNORED, IGNORED])),
    # KeySchema<int(int)>({"explicit", "custom interface v2"}, "v").make(0)
    ("explicit", key("explicit", "custom interface v2", "v", [int_(0)])),
    # KeySchema<void()>({"noargs", ""}, "1").make()
    ("noargs", key("noargs", "()", "1", [])),
    # CacheKey({"blob", ""}, "1", vector<unsigned char>{0, 1, 255}, true, Color::green)
    # with enum class Color : unsigned char { red = 1, green = 2 }
    # (every enum is written as an int, whatever its underlying type)
    ("blob", key("blob", "(bytes,bool,enum)", "1", [bytes_([0, 1, 255]), bool_(True), int_(2)])),
]


def main(argv):
    digests = [(name, hashlib.sha256(data).hexdigest()) for name, data in VECTORS]
    if len(argv) == 3 and argv[1] == "--check":
        with open(argv[2], encoding="utf-8") as f:
            text = f.read()
        missing = [name for name, digest in digests if digest not in text]
        if missing:
            print("digests missing from %s: %s" % (argv[2], ", ".join(missing)))
            return 1
        print("all %d golden digests found in %s" % (len(digests), argv[2]))
        return 0
    for name, digest in digests:
        print(name, digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
