"""The GRA-shaped workload written as a distilabel pipeline; benchmarks/peers.py runs it in its own
virtual environment (distilabel's dependencies stay out of gra-stream's).

Same work as gra-stream's profile, generate and review stages: gra-stream's prompt templates, reply
schemas, token budgets and sampling parameters, sent to the same OpenAI-compatible vLLM server. Written
the way a distilabel user would: one Task per role, the two generation examples taken from the profile's
own batch (distilabel steps see one batch at a time), three reviews as one request with n = 3. Each
step runs in its own process and batches flow between them, so the steps overlap.

    python peer_distilabel.py SPEC.json

SPEC holds the seeds, the templates, the schemas, the budgets, the sampling parameters, the server's URL
and the path where the time of every finished batch is appended (one line: unix time, rows). No
`from __future__ import annotations`: distilabel reads the `StepInput` hints at run time.
"""

import json
import re
import sys
import time

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, StepInput, step
from distilabel.steps.tasks import Task

SPEC = json.loads(open(sys.argv[1]).read())
SLOT = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict) -> str:
    """gra_stream.prompts.render's one-pass {{slot}} fill, repeated: gra-stream is not installed here."""
    return SLOT.sub(lambda m: str(values[m.group(1)]), template)


def chat(role: str, values: dict) -> list[dict]:
    return [{"role": "system", "content": SPEC["templates"]["system"]},
            {"role": "user", "content": render(SPEC["templates"][role], values)}]


def parsed(output: str | None) -> dict:
    try:
        reply = json.loads(output or "")
        return reply if isinstance(reply, dict) else {}
    except json.JSONDecodeError:
        return {}


def llm(role: str) -> OpenAILLM:
    sampling = SPEC["sampling"]
    return OpenAILLM(model=SPEC["model"], base_url=SPEC["url"], api_key="EMPTY", timeout=600,
                     generation_kwargs={
                         "max_new_tokens": SPEC["max_tokens"][role], "temperature": sampling["temperature"],
                         "top_p": sampling["top_p"],
                         # in extra_body: distilabel's own response_format takes only {"type": "json_object"}
                         "extra_body": {"repetition_penalty": sampling["repetition_penalty"],
                                        "response_format": {"type": "json_schema", "json_schema": {
                                            "name": "reply", "schema": SPEC["schemas"][role], "strict": True}}}})


class Profile(Task):
    @property
    def inputs(self):
        return ["instruction", "response"]

    @property
    def outputs(self):
        return ["domain", "keywords", "summary"]

    def format_input(self, input):
        return chat("profile", input)

    def format_output(self, output, input=None):
        reply = parsed(output)
        return {"domain": reply.get("domain"), "keywords": reply.get("keywords"), "summary": reply.get("summary")}


@step(inputs=["domain", "keywords", "summary"], outputs=["keywords_1", "summary_1", "keywords_2", "summary_2"])
def PickExamples(inputs: StepInput):
    """Each profiled row anchors a task: itself and the next row of its domain in the batch."""
    rows = [r for r in inputs if r["domain"]]
    for i, row in enumerate(rows):
        same = [r for r in rows[i + 1:] + rows[:i + 1] if r["domain"] == row["domain"]]
        row.update(keywords_1=", ".join(row["keywords"] or []), summary_1=row["summary"],
                   keywords_2=", ".join(same[0]["keywords"] or []), summary_2=same[0]["summary"])
    yield rows


class Generate(Task):
    @property
    def inputs(self):
        return ["domain", "keywords_1", "summary_1", "keywords_2", "summary_2"]

    @property
    def outputs(self):
        return ["new_instruction", "new_response"]

    def format_input(self, input):
        return chat("generate", input)

    def format_output(self, output, input=None):
        reply = parsed(output)
        return {"new_instruction": reply.get("instruction"), "new_response": reply.get("response")}


class Review(Task):
    @property
    def inputs(self):
        return ["new_instruction", "new_response"]

    @property
    def outputs(self):
        return ["review"]

    def format_input(self, input):
        return chat("review", {"instruction": input["new_instruction"], "response": input["new_response"]})

    def format_output(self, output, input=None):
        return {"review": parsed(output)}


@step(inputs=["review"])
def MarkFinished(inputs: StepInput):
    """Appends when each batch of fully reviewed rows arrives: the first line is the first finished row."""
    with open(SPEC["finished"], "a") as out:
        out.write(f"{time.time()} {len(inputs)}\n")
    yield inputs


if __name__ == "__main__":
    with Pipeline(name="gra-peer", cache_dir=SPEC["cache_dir"]) as pipeline:
        load = LoadDataFromDicts(data=SPEC["seeds"])
        profile = Profile(llm=llm("profile"))
        examples = PickExamples()
        generate = Generate(llm=llm("generate"))
        review = Review(llm=llm("review"), num_generations=3, group_generations=True)
        load >> profile >> examples >> generate >> review >> MarkFinished()
    distiset = pipeline.run(use_cache=False)
    rows = distiset["default"]["train"]
    print(json.dumps({"rows": len(rows)}))
