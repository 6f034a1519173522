"""A stand-in for `eval.judge.Judge`: canned replies, and the prompts it was sent (shared by the tests here)."""


class FakeJudge:
    """Replies in order (`repeat=True`: the one reply to every call); records the prompts it was sent."""

    rule = "judge:fake"

    def __init__(self, *replies: str, repeat: bool = False):
        self.replies, self.repeat, self.prompts = list(replies), repeat, []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.replies[0] if self.repeat else self.replies.pop(0)
