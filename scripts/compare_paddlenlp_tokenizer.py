"""Measure paddlenlp 2.8.1's BertTokenizer and ours against transformers on the tokenizer tests' 240 strings.

    python scripts/compare_paddlenlp_tokenizer.py      (quoted in docs/text_encoders.md)
"""
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import transformers  # noqa: E402
from paddlenlp.transformers import BertTokenizer as PaddleNLPBertTokenizer  # noqa: E402
from test_tokenizers import TEXTS  # noqa: E402

from stable_diffusion_chinese.tokenizers import CHINESE_VOCAB_PATH, BertTokenizer  # noqa: E402


def main():
    folder = Path(tempfile.mkdtemp())
    shutil.copy(CHINESE_VOCAB_PATH, folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    paddlenlp = PaddleNLPBertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    ours = BertTokenizer()
    options = dict(max_length=77, padding="max_length", truncation=True)
    differ_paddlenlp = differ_ours = 0
    for text in TEXTS:
        expected = reference(text, **options)["input_ids"]
        differ_paddlenlp += paddlenlp(text, **options)["input_ids"] != expected
        differ_ours += ours([text], max_length=77)["input_ids"][0].tolist() != expected
    print(f"{len(TEXTS)} strings: paddlenlp BertTokenizer differs from transformers on {differ_paddlenlp}, "
          f"ours on {differ_ours}")


if __name__ == "__main__":
    main()
