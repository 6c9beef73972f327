"""Label algorithms on arrays and FiftyOne-format documents, without importing FiftyOne.

``raw`` reads and writes label documents in the exact form FiftyOne stores them (so the
bulk path in ``sepl.fo._fill`` can skip building ``fo.Label`` objects), ``pool`` maps a
function over rows on all cores, and the other modules hold the per-sample rules of the
FiftyOne features (COCO painting, CAM-to-seed, tags CSV, import and refine rows) so they
run in worker processes that never load FiftyOne.
"""
