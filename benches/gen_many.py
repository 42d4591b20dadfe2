#!/usr/bin/env python3
"""benches/gen_many.py OUTDIR: a deterministic OCI image layout of many small
images, for timing `gc` (marking and sweeping cost per blob, not per byte).

    python3 benches/gen_many.py /tmp/many

- 2,000 image manifests tagged m0000 ... m1999, each with its own config and
  3 tiny layers (uncompressed tars of one small file): layer 0 is one of 1,500
  shared layers (m0000 and m1500 share one), layers 1 and 2 belong to the
  image alone. That is 2,000 manifests + 2,000 configs + 5,500 layers = 9,500
  reachable blobs.
- 500 garbage blobs: 400 loose blobs of 100 B - 4 KiB, and 25 unreferenced
  images (manifest, config and 2 layers each).

About 10,000 blobs and 15 MB of data. Python 3 standard library only. The output is a
pure function of the generator version: fixed tar headers (owner 0:0, mtime
1700000000, mode 0644), compact JSON with keys in a fixed order.

OUTDIR/.gen_many-stamp records the generator version; a second run prints
"cached" and exits at once. An OUTDIR with a different (or no) stamp is
removed and regenerated, but only if it looks like an earlier output (it holds
oci-layout or the stamp) or is empty; anything else is refused.
"""

import hashlib
import json
import os
import shutil
import sys
import tarfile

GENERATOR = "ocikit-gen-many 1"
STAMP = ".gen_many-stamp"
IMAGES = 2000
SHARED_LAYERS = 1500
LOOSE_GARBAGE = 400
GARBAGE_IMAGES = 25

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        self.count = 0
        self.bytes = 0

    def put(self, media_type, data):
        hex_ = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobs, hex_)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            self.count += 1
            self.bytes += len(data)
        return {"mediaType": media_type, "digest": "sha256:" + hex_, "size": len(data)}

    def layer(self, name, text):
        """A one-file uncompressed tar; returns (descriptor, diff_id)."""
        body = text.encode()
        info = tarfile.TarInfo(name)
        info.size = len(body)
        info.mtime = 1700000000
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # Header, data padded to 512, two zero blocks: no padding to tar's
        # 10 KiB record, so the layers stay tiny.
        pad = (512 - len(body) % 512) % 512
        data = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + body + b"\0" * (pad + 1024)
        desc = self.put(MT_LAYER, data)
        return desc, desc["digest"]

    def image(self, label, layers):
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"], "Labels": {"bench.image": label}},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": "gen_many layer %d" % i}
                for i in range(len(layers))
            ],
        }
        cfg = self.put(MT_CONFIG, compact(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": cfg,
            "layers": [l for l, _ in layers],
        }
        return self.put(MT_MANIFEST, compact(manifest))


def prepare(out, stamp):
    """False if a matching stamp says there is nothing to do."""
    try:
        with open(os.path.join(out, STAMP)) as f:
            if f.read() == stamp:
                return False
    except OSError:
        pass
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            sys.exit("gen_many.py: %s exists and is not a directory" % out)
        ours = os.path.exists(os.path.join(out, "oci-layout")) or os.path.exists(
            os.path.join(out, STAMP)
        )
        empty = not os.listdir(out)
        if not ours and not empty:
            sys.exit(
                "gen_many.py: %s exists, is not empty and is not a gen_many output; "
                "refusing to delete it" % out
            )
        if not empty:
            print("gen_many.py: removing stale %s" % out, file=sys.stderr)
            shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    return True


def generate(out):
    lay = Layout(out)
    shared = [
        lay.layer("shared/%04d.txt" % i, "shared layer %d\n" % i) for i in range(SHARED_LAYERS)
    ]
    entries = []
    for i in range(IMAGES):
        layers = [
            shared[i % SHARED_LAYERS],
            lay.layer("app/%04d-a.txt" % i, "image %d, layer a\n" % i),
            lay.layer("app/%04d-b.txt" % i, "image %d, layer b\n" % i + "x" * (i % 300)),
        ]
        desc = lay.image("m%04d" % i, layers)
        desc["annotations"] = {"org.opencontainers.image.ref.name": "m%04d" % i}
        entries.append(desc)
    reachable = lay.count

    for i in range(LOOSE_GARBAGE):
        size = 100 + (i * 997) % 4000
        seed = hashlib.sha256(b"garbage %d" % i).digest()
        data = (seed * (size // len(seed) + 1))[:size]
        lay.put("application/octet-stream", data)
    for i in range(GARBAGE_IMAGES):
        layers = [
            lay.layer("garbage/%02d-a.txt" % i, "garbage image %d, layer a\n" % i),
            lay.layer("garbage/%02d-b.txt" % i, "garbage image %d, layer b\n" % i),
        ]
        lay.image("garbage%02d" % i, layers)
    garbage = lay.count - reachable

    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(compact(index))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(b'{"imageLayoutVersion":"1.0.0"}')
    return lay, reachable, garbage


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: gen_many.py OUTDIR")
    out = sys.argv[1]
    stamp = GENERATOR + "\n"
    if not prepare(out, stamp):
        print("gen_many.py: %s: cached" % out)
        return
    lay, reachable, garbage = generate(out)
    with open(os.path.join(out, STAMP), "w") as f:
        f.write(stamp)
    print(
        "gen_many.py: %s: %d images, %d blobs (%d reachable, %d garbage), %.1f MB"
        % (out, IMAGES, lay.count, reachable, garbage, lay.bytes / 1e6)
    )


if __name__ == "__main__":
    main()
