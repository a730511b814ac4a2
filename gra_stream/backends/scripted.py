"""A backend that plays queued replies and keeps every request it was sent: for testing a stage or a
prompt without a model. Give it to a pool by model name: `ModelPool(config, backends={"m": Scripted([...])})`."""
from __future__ import annotations

from gra_stream.backends import ChatRequest, Completion


class Scripted:
    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.history: list[ChatRequest] = []

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        self.history.extend(requests)
        return [Completion(self.replies.pop(0), 10, 5, "stop") for _ in requests]

    def close(self) -> None:
        pass
