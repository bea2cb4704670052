"""How a benchmark row is written: the system prompt, the setup code every program runs after,
the user turn and ``make_row``. Kept apart from loading (``env.problems``) so that row sources
(``micro.rl_problems``, ``data.leetcode``) can build rows without importing the loader that
reads them."""
from __future__ import annotations

from vgrout_ray.env.modes import ORIGINAL_PHRASE

SYSTEM_PROMPT = (
    "You are an expert Python programmer. Write correct, efficient Python 3 code that solves the "
    "problem and passes all tests. Output the code in the following format: ```python\n<code>\n```"
)

# Imports and the ListNode / TreeNode helpers every program runs after (benchmark setup code).
SETUP_CODE = """import random
import functools
import collections
import string
import math
import datetime

from typing import *
from functools import *
from collections import *
from itertools import *
from heapq import *
from bisect import *
from string import *
from operator import *
from math import *

inf = float('inf')

class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next

def list_node(values: list):
    if not values:
        return None
    head = ListNode(values[0])
    p = head
    for val in values[1:]:
        node = ListNode(val)
        p.next = node
        p = node
    return head

def is_same_list(p1, p2):
    if p1 is None and p2 is None:
        return True
    if not p1 or not p2:
        return False
    return p1.val == p2.val and is_same_list(p1.next, p2.next)

class TreeNode:
    def __init__(self, val=0, left=None, right=None):
        self.val = val
        self.left = left
        self.right = right

def tree_node(values: list):
    if not values:
        return None
    root = TreeNode(values[0])
    i = 1
    queue = deque()
    queue.append(root)
    while queue:
        node = queue.popleft()
        if i < len(values) and values[i] is not None:
            node.left = TreeNode(values[i])
            queue.append(node.left)
        i += 1
        if i < len(values) and values[i] is not None:
            node.right = TreeNode(values[i])
            queue.append(node.right)
        i += 1
    return root

def is_same_tree(p, q):
    if not p and not q:
        return True
    elif not p or not q:
        return False
    elif p.val != q.val:
        return False
    else:
        return is_same_tree(p.left, q.left) and is_same_tree(p.right, q.right)
"""

def user_prompt(description: str, method: str, starter_code: str) -> str:
    """The benchmark's user turn: problem text, the method to write, the starter code."""
    return (
        f"PROBLEM:\n{description.rstrip()}\n\n"
        f"Your solution to the problem should be a method of the class Solution called {method} "
        f"{ORIGINAL_PHRASE}. Use the following starter code:\n"
        f"```python\n{starter_code.rstrip()}\n        # Add your code here\n```\n\nSOLUTION:\n"
    )


def make_row(*, pid: int, difficulty: str, description: str, method: str, starter_code: str,
             tests: list[str], canonical: str, setup_code: str = SETUP_CODE, response_prefix: str = "") -> dict:
    """A benchmark-form row (the shared test set's schema) from its parts; ``response_prefix``
    (optional field, see ``to_problem``) when the answer's first line is given."""
    user = user_prompt(description, method, starter_code)
    extra = {"response_prefix": response_prefix} if response_prefix else {}
    return {**extra,
        "difficulty": difficulty,
        "prompt": [{"content": SYSTEM_PROMPT, "role": "system"}, {"content": user, "role": "user"}],
        "id": pid,
        "dataset": "leetcode",
        "evaluator": "code",
        "question": user,
        "gt_answer": list(tests),
        "answer": list(tests),
        "hint": None,
        "func_name": f"Solution().{method}",
        "setup_code": setup_code,
        "canonical_solution": canonical,
        "prompt_metadata": {"starter_code": starter_code.rstrip() + "\n        "},
        "completion_gt_pass": True,
    }
