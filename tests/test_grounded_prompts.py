"""Prompt construction, the sub-prompt tree and phrase -> class mapping."""

import numpy as np
import pytest

from sepl.classes import COCO_CLASSES, VOC_CLASSES
from sepl.errors import SeplError
from sepl.grounded.detectors import RawDetections, select_detections
from sepl.grounded.prompts import (VOC_SUBPROMPTS, build_prompt, merge_subprompts, parse_subprompts,
                                   token_phrase_index)

COCO = ["background"] + COCO_CLASSES


def test_voc_prompt_is_class_index_order_lower_case_with_subprompts():
    p = build_prompt(["TVMonitor", "horse", "person", "background", "horse"], VOC_CLASSES, VOC_SUBPROMPTS)
    assert p.caption == "horse.halter.saddle.person.tvmonitor.tv.monitor."
    assert p.phrases == ["horse", "halter", "saddle", "person", "tvmonitor", "tv", "monitor"]
    assert p.classes == [13, 13, 13, 15, 20, 20, 20]
    for (s, e), ph in zip(p.spans, p.phrases):
        assert p.caption[s:e] == ph
    assert p.class_of(" Saddle ") == 13 and p.class_of("zebra") == -1


def test_diningtable_subprompts_and_single_class():
    p = build_prompt(["diningtable"], VOC_CLASSES, VOC_SUBPROMPTS)
    assert p.caption == "diningtable.bowl.plate.food.fruit.glass.dishes."
    assert set(p.classes) == {11}
    assert build_prompt(["cat"], VOC_CLASSES, VOC_SUBPROMPTS).caption == "cat."


def test_coco_prompt_alphabetical_and_separator():
    p = build_prompt(["zebra", "dining table", "person"], COCO, order="alphabetical", separator=" . ")
    assert p.caption == "dining table . person . zebra."
    assert p.classes == [COCO.index("dining table"), COCO.index("person"), COCO.index("zebra")]


def test_empty_tags_give_an_empty_prompt_and_unknown_tags_fail():
    assert build_prompt([], VOC_CLASSES).empty
    assert build_prompt(["background"], VOC_CLASSES).caption == ""
    with pytest.raises(SeplError, match="'zebra' is not one of the 21 class names"):
        build_prompt(["zebra"], VOC_CLASSES, sample="a.jpg")
    with pytest.raises(SeplError, match="not class names"):
        build_prompt(["cat"], VOC_CLASSES, {"kitten": ["cub"]})


def test_user_tree_extends_defaults_and_a_shared_phrase_goes_to_the_first_class():
    tree = merge_subprompts(VOC_SUBPROMPTS, parse_subprompts("sofa: couch ,settee; horse:pony,saddle"))
    assert tree["horse"] == ["halter", "saddle", "pony"]
    assert tree["sofa"] == ["couch", "settee"]
    # "tv" under two parents: kept once, for the lower class index
    p = build_prompt(["tvmonitor", "sofa"], VOC_CLASSES, {"sofa": ["tv", "couch"], "tvmonitor": ["tv"]})
    assert p.phrases.count("tv") == 1 and p.classes[p.phrases.index("tv")] == VOC_CLASSES.index("sofa")


def test_parse_subprompts_json_and_errors(tmp_path):
    f = tmp_path / "tree.json"
    f.write_text('{"Bottle": ["wine bottle", "Water Bottle"]}')
    assert parse_subprompts(str(f)) == {"bottle": ["wine bottle", "water bottle"]}
    assert parse_subprompts('{"cat": "kitten"}') == {"cat": ["kitten"]}
    with pytest.raises(SeplError, match="has no ':'"):
        parse_subprompts("horse saddle")
    with pytest.raises(SeplError, match="JSON"):
        parse_subprompts("{bad json")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from sepl.grounded.tiny import _tokenizer, write_vocab

    return _tokenizer(write_vocab(tmp_path_factory.mktemp("vocab")))


def test_token_phrase_index_marks_separators_and_specials(tokenizer):
    p = build_prompt(["horse", "diningtable"], VOC_CLASSES, VOC_SUBPROMPTS)
    index, ids = token_phrase_index(p, tokenizer)
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert [i for t, i in zip(toks, index) if t in ("[CLS]", "[SEP]", ".")] == [-1] * (toks.count(".") + 2)
    words = [p.phrases[i] for i in index if i >= 0]
    assert words == p.phrases  # one token per phrase with this vocabulary


def test_multi_token_phrases_map_every_token(tokenizer):
    p = build_prompt(["dining table", "teddy bear"], COCO, order="alphabetical")
    index, ids = token_phrase_index(p, tokenizer)
    assert list(index) == [-1, 0, 0, -1, 1, 1, -1, -1]


def _raw(scores, phrase_of_token):
    scores = np.asarray(scores, np.float32)
    boxes = np.tile(np.array([[1, 2, 10, 12]], np.float32), (len(scores), 1))
    boxes[:, 0] = np.arange(len(scores))
    return RawDetections(boxes, scores, np.asarray(phrase_of_token))


def test_select_detections_maps_argmax_token_and_counts_every_drop():
    p = build_prompt(["horse", "person"], VOC_CLASSES, VOC_SUBPROMPTS)  # horse.halter.saddle.person.
    tokens = [-1, 0, -1, 1, -1, 2, -1, 3, -1, -1]
    s = np.zeros((5, 10), np.float32)
    s[0, 1] = 0.9            # horse
    s[1, 5] = 0.5            # saddle -> horse
    s[2, 7] = 0.31; s[2, 1] = 0.2   # person
    s[3, 4] = 0.8            # a separator token: unmatched, dropped and counted
    s[4, 7] = 0.3            # not above 0.3
    d = select_detections(_raw(s, tokens), p, box_threshold=0.3, text_threshold=0.25)
    assert d.phrases == ["horse", "saddle", "person"]
    assert list(d.class_ids) == [13, 13, 15]
    np.testing.assert_allclose(d.scores, [0.9, 0.5, 0.31], rtol=1e-6)
    assert list(d.boxes[:, 0]) == [0, 1, 2]
    assert d.counts == dict(queries=5, below_box_threshold=1, unmatched_phrase=1, below_text_threshold=0, kept=3)
    # a text threshold above the box threshold drops (and counts) the weak phrase
    d2 = select_detections(_raw(s, tokens), p, box_threshold=0.3, text_threshold=0.4)
    assert d2.phrases == ["horse", "saddle"] and d2.counts["below_text_threshold"] == 1


def test_all_below_threshold_keeps_nothing():
    p = build_prompt(["cat"], VOC_CLASSES)
    d = select_detections(_raw(np.full((4, 4), 0.1), [-1, 0, -1, -1]), p)
    assert len(d) == 0 and d.counts["below_box_threshold"] == 4 and d.boxes.shape == (0, 4)
