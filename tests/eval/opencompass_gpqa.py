"""OpenCompass's GPQA loader and prompt template, as the oracle for the paper's GPQA prompts.

Vendored (Apache License 2.0, Copyright OpenCompass Authors) from open-compass/opencompass:
- ``opencompass/datasets/gpqa.py`` ``GPQADataset.load`` (commit 07423f7107d1), returning the
  list that it hands to ``datasets.Dataset.from_list`` (whose rows keep the dict key order);
- ``opencompass/configs/datasets/gpqa/gpqa_openai_simple_evals_gen_5aeece.py`` ``align_prompt``
  (commit b8f40befad52), the config the paper's ``evaluation/qwen3_ifeval_gpqa.py`` imports;
- ``opencompass/utils/prompt.py`` ``safe_format`` and how ``PromptTemplate.generate_item``
  (``opencompass/openicl/icl_prompt_template.py``, commit 7858334b3023) fills it: the whole
  test row as ``entry``, the output column (``answer``) replaced by ``''``.
Only the file path handling is changed (one path instead of ``path``/``name``).
"""

import copy
import csv

align_prompt = """
Answer the following multiple choice question. The last line of your response should be of the following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before answering.

{question}

A) {A}
B) {B}
C) {C}
D) {D}
""".strip()


def load(path: str):
    cnt = 0
    data = []
    data_new = []
    with open(path, 'r', encoding='utf-8') as f:
        reader = csv.reader(f, delimiter=',')
        for row in reader:
            if row[7] == 'Question':
                continue
            cnt = cnt + 1
            question = row[7]
            A = row[8]
            B = row[9]
            C = row[10]
            D = row[11]
            options = [row[8], row[9], row[10], row[11]]
            answer = 'A'

            data.append({
                'question': question,
                'A': A,
                'B': B,
                'C': C,
                'D': D,
                'options': options,
                'answer': answer
            })

            circular_patterns = ['ABCD', 'BCDA', 'CDAB', 'DABC']
            c = circular_patterns[cnt % 4]
            line = copy.deepcopy(data[cnt - 1])
            tmp = line['A']
            for i in range(4):
                line['ABCD'[i]] = line['options'][ord(c[i]) - ord('A')]

            for i in range(4):
                if line['ABCD'[i]] == tmp:
                    line['answer'] = 'ABCD'[i]
                    break
            data_new.append(line)
    return data_new


def safe_format(input_str: str, **kwargs) -> str:
    for k, v in kwargs.items():
        input_str = input_str.replace(f'{{{k}}}', str(v))
    return input_str


def prompts(path: str):
    """(prompt, gold letter) of every row, as OpenCompass builds them for the paper's config."""
    out = []
    for row in load(path):
        entry = copy.deepcopy(row)
        entry['answer'] = ''  # generate_item: the output column is replaced by ''
        out.append((safe_format(align_prompt, **entry), row['answer']))
    return out
