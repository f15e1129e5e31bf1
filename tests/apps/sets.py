"""A step whose code holds a set literal: a constant whose order follows the hash seed."""

from tether import step, workflow


@step
def classify(word: str) -> str:
    return "vowel" if word[:1] in {"a", "e", "i", "o", "u", "y"} else "consonant"


@workflow
async def sort_word(word: str) -> str:
    return await classify(word)
