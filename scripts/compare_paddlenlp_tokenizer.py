"""Measure paddlenlp 2.8.1's BertTokenizer against transformers on the tokenizer tests' 240 strings (docs/text_encoders.md)."""
import sys; sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'tests'))
from test_tokenizers import TEXTS
from paddlenlp.transformers import BertTokenizer as PT
from stable_diffusion_chinese.tokenizers import BertTokenizer, CHINESE_VOCAB_PATH
import transformers, tempfile, shutil, json, os
d = tempfile.mkdtemp(); shutil.copy(CHINESE_VOCAB_PATH, d + "/vocab.txt")
json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, open(d + "/tokenizer_config.json", "w"))
ref = transformers.AutoTokenizer.from_pretrained(d)
p = PT(vocab_file=d + "/vocab.txt", do_lower_case=True)
ours = BertTokenizer()
bad_p = bad_o = 0
for t in TEXTS:
    r = ref(t, max_length=77, padding="max_length", truncation=True)["input_ids"]
    q = p(t, max_length=77, padding="max_length", truncation=True)["input_ids"]
    o = ours([t], max_length=77)["input_ids"][0].tolist()
    bad_p += q != r; bad_o += o != r
print(f"{len(TEXTS)} strings: paddlenlp BertTokenizer differs from transformers on {bad_p}, ours on {bad_o}")
