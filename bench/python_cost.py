"""The CPU of everything in a detect run but the models: every detector call recorded once, then
replayed (decode, scene cuts, tracker, mask geometry, report), so two trees compare side by side.

    python bench/python_cost.py record CLIP CACHE.pkl              # runs the detectors, once
    PYTHONPATH=TREE python bench/python_cost.py replay CLIP CACHE.pkl OUT.json [--profile OUT.prof]

``replay`` prints the process CPU per frame (decoding's ffmpeg child not included) and writes the
report to OUT.json; two trees (``git -C /work/main archive main | tar -x -C /tmp/main``, then
``PYTHONPATH=/tmp/main``) must write the same frames. Each replayed call returns the recorded
result in call order (face, edge pass, head, text); a tree that asks the detectors anything else
fails the final check. The second look (off by default) is not recorded: leave it off.
"""
import pickle
import sys
import time
from pathlib import Path

from anonymize import api, regions_source

mode, clip, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
calls: dict[str, list] = {}
rec = mode == "record"
if not rec:
    calls = pickle.loads(cache.read_bytes())
    calls.pop("boxes_at", None)
pos: dict[str, int] = {}


def wrap(name, fn):
    if rec:
        calls.setdefault(name, [])

    def w(*a, **k):
        if rec:
            out = fn(*a, **k)
            calls[name].append(out)
            return out
        i = pos.get(name, 0)
        pos[name] = i + 1
        return calls[name][i]
    return w


runner = api.Anonymizer()
eng = runner.engine
eng.detector.detect = wrap("face", eng.detector.detect)
for n, d in eng.mark_detectors.items():
    d.detect = wrap(n, d.detect)
orig_init = regions_source.EdgePass.__init__


def init(self, det, min_height):
    orig_init(self, det, min_height)
    det.detect = wrap("edge", det.detect)


regions_source.EdgePass.__init__ = init
prof = None
if "--profile" in sys.argv:
    import cProfile
    prof = cProfile.Profile()
t0 = time.process_time()
if prof:
    prof.enable()
rep = runner.detect(clip)
if prof:
    prof.disable()
    prof.dump_stats(sys.argv[sys.argv.index("--profile") + 1])
cpu = time.process_time() - t0
print(f"{mode}: {rep.frame_count} frames, process CPU {cpu:.2f} s ({1000 * cpu / rep.frame_count:.1f} ms/frame)",
      file=sys.stderr)
if rec:
    cache.write_bytes(pickle.dumps(calls))
    print({k: len(v) for k, v in calls.items()}, file=sys.stderr)
else:
    assert all(pos.get(k, 0) == len(v) for k, v in calls.items()), (pos, {k: len(v) for k, v in calls.items()})
out = Path(sys.argv[4]) if not rec else cache.with_suffix(".json")
rep.seconds = 0.0
runner.write_report(out, [rep])
