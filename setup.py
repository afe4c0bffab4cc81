"""Build hook for the one optional C extension; everything else is declared in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        # The semantic classifier's embedding and vote in one native pass each. Optional: without a C
        # compiler the install goes on and the classifier uses numpy for the same arithmetic.
        Extension("llm_router.classify._vote", ["plugin/llm_router/classify/_vote.c"], optional=True,
                  extra_compile_args=["-O3"]),
    ],
)
