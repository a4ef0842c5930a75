"""Writes the per-chunk overhead workload: STREAMS streams of CHUNKS chunks
of SIZE bytes (1,460 by default) of seeded random bytes, in the order the
timing programs send them: round-robin (every stream's first chunk, then
every stream's second...), so that each reads its input in order.

    python3 workload.py OUT [STREAMS] [CHUNKS] [SIZE]
"""

import random
import sys

out = sys.argv[1]
streams = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
chunks = int(sys.argv[3]) if len(sys.argv) > 3 else 10
size = int(sys.argv[4]) if len(sys.argv) > 4 else 1460
rng = random.Random(size)
with open(out, "wb") as file:
    for _ in range(streams * chunks):
        file.write(rng.randbytes(size))
