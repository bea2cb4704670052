"""Source of the packaged problem set ``problems.jsonl`` (original problems, ids 9001+).

Each problem is held here as plain data: statement, worked examples, constraints, method
signature, canonical solution and test inputs. Expected values are computed by running the
canonical solution (after the benchmark setup code); every hand-written expectation (all
worked examples and some tests) must match what the canonical returns, or generation fails.

Regenerate (byte-identical output):

    python tools/author_builtin.py
"""
from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

from vgrout_ray.env.problems import ORIGINAL_PHRASE, SETUP_CODE, make_row

OUT_PATH = Path(__file__).resolve().parents[1] / "vgrout_ray" / "env" / "builtin" / "problems.jsonl"
MIN_TESTS, MAX_TESTS = 8, 14


def P(pid, difficulty, method, params, ret, statement, examples, constraints, canonical, tests):
    """One problem as data.

    examples: [(kwargs, expected, explanation-or-None)], rendered into the description and
    also used as the first tests. tests: kwargs dicts (expected computed by the canonical) or
    (kwargs, expected) pairs (hand-checked against the canonical).
    """
    return dict(pid=pid, difficulty=difficulty, method=method, params=params, ret=ret,
                statement=statement, examples=examples, constraints=constraints,
                canonical=canonical, tests=tests)


def code(src: str) -> str:
    return textwrap.dedent(src).strip("\n") + "\n"


PROBLEMS = [
    # ------------------------------------------------------------------ 9001 prefix sums / hashing
    P(9001, "medium", "longestDivisibleSegment", "nums: List[int], k: int", "int",
      "You are given an integer array nums and a positive integer k. A segment is a non-empty "
      "contiguous part of nums. Return the length of the longest segment whose element sum is "
      "divisible by k (a sum of 0 or a negative multiple of k also counts). If no segment "
      "qualifies, return 0.",
      [(dict(nums=[3, 1, 4, 1, 5], k=5), 3, "The segment [4,1,5] sums to 10; no longer segment has a sum divisible by 5."),
       (dict(nums=[1, 2], k=4), 0, "The possible sums are 1, 2 and 3.")],
      ["1 <= nums.length <= 10^5", "-10^4 <= nums[i] <= 10^4", "1 <= k <= 10^9"],
      code("""
          class Solution:
              def longestDivisibleSegment(self, nums: List[int], k: int) -> int:
                  first = {0: -1}
                  best = 0
                  s = 0
                  for i, x in enumerate(nums):
                      s = (s + x) % k
                      if s in first:
                          best = max(best, i - first[s])
                      else:
                          first[s] = i
                  return best
      """),
      [(dict(nums=[7], k=7), 1), (dict(nums=[0, 0, 0], k=1000000000), 3),
       (dict(nums=[5, 5, 5, 5], k=5), 4), (dict(nums=[1, 1, 1, 1, 1, 1], k=4), 4),
       dict(nums=[-3, 1, 2, -6, 4], k=6), dict(nums=[2, 4, 6, 8], k=7),
       (dict(nums=[-5], k=3), 0), (dict(nums=[3, -3, 4, -4, 1], k=100), 4),
       dict(nums=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], k=11), (dict(nums=[9, 9, 9], k=2), 2)]),

    # ------------------------------------------------------------------ 9002 sliding window
    P(9002, "medium", "countLimitedDistinct", "nums: List[int], k: int", "int",
      "Given an integer array nums and an integer k, return the number of non-empty contiguous "
      "subarrays of nums that contain at most k distinct values.",
      [(dict(nums=[1, 2, 1, 3], k=2), 8,
        "Only [2,1,3] and [1,2,1,3] contain three distinct values; the other 8 subarrays qualify."),
       (dict(nums=[4, 4, 4], k=1), 6, None)],
      ["1 <= nums.length <= 10^5", "0 <= nums[i] <= 10^9", "1 <= k <= nums.length"],
      code("""
          class Solution:
              def countLimitedDistinct(self, nums: List[int], k: int) -> int:
                  count = {}
                  left = 0
                  total = 0
                  for right, x in enumerate(nums):
                      count[x] = count.get(x, 0) + 1
                      while len(count) > k:
                          y = nums[left]
                          count[y] -= 1
                          if count[y] == 0:
                              del count[y]
                          left += 1
                      total += right - left + 1
                  return total
      """),
      [(dict(nums=[1], k=1), 1), (dict(nums=[1, 2, 3], k=3), 6), (dict(nums=[1, 2, 3], k=1), 3),
       dict(nums=[1, 2, 1, 2, 3, 3], k=2), (dict(nums=[5, 1, 5, 1, 5], k=1), 5),
       dict(nums=[0, 0, 1, 1, 2, 2, 0], k=2), dict(nums=[3, 1, 4, 1, 5, 9, 2, 6], k=3),
       (dict(nums=[2, 2, 2, 2, 2], k=5), 15)]),

    # ------------------------------------------------------------------ 9003 intervals
    P(9003, "medium", "mergeWithTolerance", "intervals: List[List[int]], gap: int", "List[List[int]]",
      "You are given a list of closed intervals intervals[i] = [start_i, end_i] in arbitrary order "
      "and a non-negative integer gap. Two intervals are joined into one when they overlap or when "
      "the later one starts at most gap units after the earlier one ends. Joining is repeated until "
      "no two of the resulting intervals can be joined. Return the resulting intervals sorted by "
      "their start.",
      [(dict(intervals=[[1, 3], [6, 8], [4, 5], [12, 15]], gap=1), [[1, 8], [12, 15]],
        "[1,3] and [4,5] are 1 unit apart, as are [4,5] and [6,8], so these three join. [12,15] starts 4 units after 8."),
       (dict(intervals=[[5, 10], [1, 2]], gap=0), [[1, 2], [5, 10]], None)],
      ["1 <= intervals.length <= 10^4", "0 <= start_i <= end_i <= 10^9", "0 <= gap <= 10^9"],
      code("""
          class Solution:
              def mergeWithTolerance(self, intervals: List[List[int]], gap: int) -> List[List[int]]:
                  res = []
                  for s, e in sorted(intervals):
                      if res and s - res[-1][1] <= gap:
                          res[-1][1] = max(res[-1][1], e)
                      else:
                          res.append([s, e])
                  return res
      """),
      [(dict(intervals=[[0, 0]], gap=0), [[0, 0]]), (dict(intervals=[[1, 5], [2, 3]], gap=0), [[1, 5]]),
       (dict(intervals=[[1, 2], [3, 4]], gap=0), [[1, 2], [3, 4]]),
       (dict(intervals=[[1, 2], [2, 4]], gap=0), [[1, 4]]),
       dict(intervals=[[10, 20], [0, 5], [21, 22], [30, 40], [25, 26]], gap=3),
       (dict(intervals=[[1, 10], [2, 3], [4, 5], [12, 13]], gap=1), [[1, 10], [12, 13]]),
       (dict(intervals=[[0, 1], [100, 101]], gap=1000000000), [[0, 101]]),
       (dict(intervals=[[5, 5], [5, 5]], gap=0), [[5, 5]]),
       dict(intervals=[[7, 9], [1, 3], [4, 4], [14, 20], [11, 12]], gap=2)]),

    # ------------------------------------------------------------------ 9004 heap / intervals
    P(9004, "medium", "minRoomsWithCleanup", "meetings: List[List[int]], cleanup: int", "int",
      "Each meeting meetings[i] = [start_i, end_i] occupies one room during the half-open time range "
      "[start_i, end_i). After a meeting ends its room must be cleaned for cleanup minutes, so that "
      "room can host another meeting only if the other meeting starts at time end_i + cleanup or "
      "later. Return the minimum number of rooms needed to hold all the meetings.",
      [(dict(meetings=[[1, 4], [4, 6], [9, 12]], cleanup=2), 2,
        "The first room is clean again at time 6, too late for the meeting starting at 4."),
       (dict(meetings=[[0, 5], [7, 9], [10, 12]], cleanup=1), 1, None)],
      ["1 <= meetings.length <= 10^4", "0 <= start_i < end_i <= 10^9", "0 <= cleanup <= 10^9"],
      code("""
          class Solution:
              def minRoomsWithCleanup(self, meetings: List[List[int]], cleanup: int) -> int:
                  free_at = []
                  for s, e in sorted(meetings):
                      if free_at and free_at[0] <= s:
                          heapreplace(free_at, e + cleanup)
                      else:
                          heappush(free_at, e + cleanup)
                  return len(free_at)
      """),
      [(dict(meetings=[[0, 1]], cleanup=0), 1), (dict(meetings=[[1, 2], [2, 3], [3, 4]], cleanup=0), 1),
       (dict(meetings=[[1, 2], [2, 3], [3, 4]], cleanup=1), 2),
       (dict(meetings=[[0, 10], [0, 10], [0, 10]], cleanup=0), 3),
       (dict(meetings=[[5, 8], [1, 3], [3, 5], [8, 9]], cleanup=0), 1),
       dict(meetings=[[0, 4], [1, 5], [2, 6], [7, 8], [8, 9]], cleanup=3),
       dict(meetings=[[0, 100], [101, 102], [150, 160]], cleanup=50),
       dict(meetings=[[3, 7], [1, 2], [6, 9], [2, 4], [8, 12], [10, 11]], cleanup=1)]),

    # ------------------------------------------------------------------ 9005 BFS with state
    P(9005, "hard", "minStepsWithLeaps", "heights: List[List[int]], limit: int, k: int", "int",
      "You are given an m x n grid heights and integers limit and k. From a cell you may move to "
      "any of its four side-neighbours inside the grid; each move is one step. A move between "
      "cells whose heights differ by at most limit is ordinary; any other move is a leap, and a "
      "route may contain at most k leaps in total. Return the minimum number of steps needed to "
      "go from the top-left cell to the bottom-right cell, or -1 if it is impossible.",
      [(dict(heights=[[1, 2, 9], [8, 3, 4], [9, 9, 5]], limit=1, k=0), 4,
        "Follow the heights 1, 2, 3, 4, 5; each move changes the height by 1."),
       (dict(heights=[[1, 9], [9, 1]], limit=2, k=1), -1, "Every route needs two leaps.")],
      ["1 <= m, n <= 40", "0 <= heights[i][j] <= 10^6", "0 <= limit <= 10^6", "0 <= k <= 10"],
      code("""
          class Solution:
              def minStepsWithLeaps(self, heights: List[List[int]], limit: int, k: int) -> int:
                  m, n = len(heights), len(heights[0])
                  if m == 1 and n == 1:
                      return 0
                  # fewest leaps used to reach each cell so far (BFS explores by step count)
                  best = [[k + 1] * n for _ in range(m)]
                  best[0][0] = 0
                  queue = deque([(0, 0, 0)])
                  steps = 0
                  while queue:
                      steps += 1
                      for _ in range(len(queue)):
                          r, c, used = queue.popleft()
                          for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                              if 0 <= nr < m and 0 <= nc < n:
                                  nu = used + (abs(heights[nr][nc] - heights[r][c]) > limit)
                                  if nu < best[nr][nc]:
                                      if nr == m - 1 and nc == n - 1:
                                          return steps
                                      best[nr][nc] = nu
                                      queue.append((nr, nc, nu))
                  return -1
      """),
      [(dict(heights=[[5]], limit=0, k=0), 0), (dict(heights=[[1, 100]], limit=0, k=1), 1),
       (dict(heights=[[1, 100]], limit=0, k=0), -1),
       (dict(heights=[[1, 9, 1, 1, 1], [1, 9, 1, 9, 1], [1, 1, 1, 9, 1]], limit=0, k=0), 10),
       (dict(heights=[[1, 9, 1, 1, 1], [1, 9, 1, 9, 1], [1, 1, 1, 9, 1]], limit=0, k=1), 10),
       (dict(heights=[[1, 9, 1, 1, 1], [1, 9, 1, 9, 1], [1, 1, 1, 9, 1]], limit=0, k=2), 6),
       dict(heights=[[0, 3, 6, 9], [2, 5, 8, 11], [4, 7, 10, 13], [6, 9, 12, 15]], limit=2, k=0),
       dict(heights=[[0, 5, 0, 0], [0, 5, 0, 5], [0, 5, 0, 5], [0, 0, 0, 5]], limit=1, k=0),
       dict(heights=[[0, 5, 0, 0], [0, 5, 0, 5], [0, 5, 0, 5], [0, 0, 0, 5]], limit=1, k=1),
       dict(heights=[[3, 8, 2, 7], [1, 6, 4, 9], [5, 2, 8, 3]], limit=3, k=1)]),

    # ------------------------------------------------------------------ 9006 monotonic stack
    P(9006, "medium", "nearestGreater", "nums: List[int]", "List[int]",
      "Given an integer array nums, for every index i find the index j of an element strictly "
      "greater than nums[i] that is closest to i, measured by |i - j|. If the closest greater "
      "elements on the left and on the right are equally far away, choose the one on the left. If "
      "no element is greater than nums[i], use -1. Return the array of chosen indices.",
      [(dict(nums=[3, 1, 4, 2]), [2, 0, -1, 2],
        "For index 1 the elements 3 (index 0) and 4 (index 2) are both at distance 1, so index 0 is chosen."),
       (dict(nums=[5, 5, 5]), [-1, -1, -1], None)],
      ["1 <= nums.length <= 10^5", "-10^9 <= nums[i] <= 10^9"],
      code("""
          class Solution:
              def nearestGreater(self, nums: List[int]) -> List[int]:
                  n = len(nums)
                  left = [-1] * n
                  right = [-1] * n
                  stack = []
                  for i in range(n):
                      while stack and nums[stack[-1]] <= nums[i]:
                          stack.pop()
                      if stack:
                          left[i] = stack[-1]
                      stack.append(i)
                  stack = []
                  for i in range(n - 1, -1, -1):
                      while stack and nums[stack[-1]] <= nums[i]:
                          stack.pop()
                      if stack:
                          right[i] = stack[-1]
                      stack.append(i)
                  res = []
                  for i in range(n):
                      l, r = left[i], right[i]
                      if l == -1:
                          res.append(r)
                      elif r == -1 or i - l <= r - i:
                          res.append(l)
                      else:
                          res.append(r)
                  return res
      """),
      [(dict(nums=[1]), [-1]), (dict(nums=[1, 2, 3, 4]), [1, 2, 3, -1]),
       (dict(nums=[4, 3, 2, 1]), [-1, 0, 1, 2]), (dict(nums=[2, 1, 2]), [-1, 0, -1]),
       dict(nums=[1, 3, 2, 5, 1, 4]), (dict(nums=[5, 1, 1, 1, 6]), [4, 0, 0, 4, -1]),
       dict(nums=[3, 3, 4, 3, 3]), dict(nums=[-2, -7, 0, -1, -9, 8, -3])]),

    # ------------------------------------------------------------------ 9007 contribution technique
    P(9007, "hard", "sumOfWeights", "nums: List[int]", "int",
      "The weight of a non-empty contiguous subarray is its largest element multiplied by its "
      "length. Given an array of positive integers nums, return the sum of the weights of all "
      "contiguous subarrays of nums. Since the answer can be very large, return it modulo "
      "10^9 + 7.",
      [(dict(nums=[2, 1, 3]), 25,
        "The weights are [2] -> 2, [1] -> 1, [3] -> 3, [2,1] -> 4, [1,3] -> 6 and [2,1,3] -> 9."),
       (dict(nums=[4, 4]), 16, None)],
      ["1 <= nums.length <= 10^5", "1 <= nums[i] <= 10^9"],
      code("""
          class Solution:
              def sumOfWeights(self, nums: List[int]) -> int:
                  MOD = 10**9 + 7
                  n = len(nums)
                  prev = [-1] * n  # previous index with value >= nums[i]
                  nxt = [n] * n    # next index with value > nums[i]
                  stack = []
                  for i in range(n):
                      while stack and nums[stack[-1]] < nums[i]:
                          stack.pop()
                      if stack:
                          prev[i] = stack[-1]
                      stack.append(i)
                  stack = []
                  for i in range(n - 1, -1, -1):
                      while stack and nums[stack[-1]] <= nums[i]:
                          stack.pop()
                      if stack:
                          nxt[i] = stack[-1]
                      stack.append(i)
                  total = 0
                  for i in range(n):
                      p, q = prev[i], nxt[i]
                      cl, cr = i - p, q - i
                      sum_r1 = (i + 1 + q) * cr // 2   # sum of (r + 1) for r in [i, q - 1]
                      sum_l = (p + 1 + i) * cl // 2    # sum of l for l in [p + 1, i]
                      total = (total + nums[i] * (cl * sum_r1 - cr * sum_l)) % MOD
                  return total
      """),
      [(dict(nums=[1]), 1), dict(nums=[5, 4, 3, 2, 1]), dict(nums=[1, 2, 3, 4, 5]),
       (dict(nums=[3, 3, 3]), 30), dict(nums=[1000000000, 1000000000, 1000000000]),
       dict(nums=[2, 7, 1, 8, 2, 8, 1, 8]), dict(nums=[6, 1, 6, 1, 6]), (dict(nums=[9, 1]), 28),
       dict(nums=[1000000000] * 20)]),

    # ------------------------------------------------------------------ 9008 stack / parsing
    P(9008, "medium", "expandGroups", "s: str", "str",
      "You are given a compressed string s made of lowercase letters, parentheses and digits. A "
      "parenthesised group (X) may be followed directly by a repetition count written in decimal; "
      "the group then stands for X written that many times. A group without a count stands for X "
      "written once. Groups may be nested. Return the fully expanded string.",
      [(dict(s="a(bc)3d"), "abcbcbcd", None),
       (dict(s="(x(yz)2)2"), "xyzyzxyzyz", "The inner group gives \"yzyz\", so the outer group is \"xyzyz\" written twice.")],
      ["1 <= s.length <= 100", "The parentheses in s are balanced and every group contains at least one letter.",
       "Digits appear only directly after ')' and form a count between 1 and 99 without leading zeros.",
       "The expanded string has length at most 10^4."],
      code("""
          class Solution:
              def expandGroups(self, s: str) -> str:
                  stack = [[]]
                  i = 0
                  n = len(s)
                  while i < n:
                      ch = s[i]
                      if ch == '(':
                          stack.append([])
                          i += 1
                      elif ch == ')':
                          inner = ''.join(stack.pop())
                          i += 1
                          j = i
                          while j < n and s[j].isdigit():
                              j += 1
                          count = int(s[i:j]) if j > i else 1
                          stack[-1].append(inner * count)
                          i = j
                      else:
                          stack[-1].append(ch)
                          i += 1
                  return ''.join(stack[0])
      """),
      [(dict(s="abc"), "abc"), (dict(s="(a)"), "a"), (dict(s="(ab)10"), "ab" * 10),
       (dict(s="((a)2b)3"), "aabaabaab"), (dict(s="x(y)1z"), "xyz"), dict(s="(a(b(c)2)2)2"),
       (dict(s="(z)12"), "z" * 12), (dict(s="a(b)2(c)3d"), "abbcccd"), dict(s="q((r)3(st)2)2u")]),

    # ------------------------------------------------------------------ 9009 DP on strings
    P(9009, "hard", "minPalindromePieces", "s: str, maxLen: int", "int",
      "Given a string s and an integer maxLen, cut s into contiguous pieces so that every piece is "
      "a palindrome whose length is at most maxLen. Return the minimum possible number of pieces. "
      "A single character is a palindrome, so a valid cutting always exists.",
      [(dict(s="abaaba", maxLen=3), 2, "The whole string is a palindrome but longer than 3; \"aba\" + \"aba\" works."),
       (dict(s="abc", maxLen=5), 3, None)],
      ["1 <= s.length <= 1000", "1 <= maxLen <= s.length", "s consists of lowercase English letters."],
      code("""
          class Solution:
              def minPalindromePieces(self, s: str, maxLen: int) -> int:
                  n = len(s)
                  # pal[i][j]: s[i..j] is a palindrome
                  pal = [[False] * n for _ in range(n)]
                  for i in range(n - 1, -1, -1):
                      for j in range(i, n):
                          if s[i] == s[j] and (j - i < 2 or pal[i + 1][j - 1]):
                              pal[i][j] = True
                  dp = [0] + [n + 1] * n  # dp[i]: fewest pieces for s[:i]
                  for i in range(1, n + 1):
                      for j in range(max(0, i - maxLen), i):
                          if pal[j][i - 1] and dp[j] + 1 < dp[i]:
                              dp[i] = dp[j] + 1
                  return dp[n]
      """),
      [(dict(s="a", maxLen=1), 1), (dict(s="aaaa", maxLen=4), 1), (dict(s="aaaa", maxLen=3), 2),
       (dict(s="aaaa", maxLen=1), 4), (dict(s="abacaba", maxLen=7), 1), dict(s="abacaba", maxLen=5),
       (dict(s="racecarxyz", maxLen=7), 4), dict(s="abccbaab", maxLen=8), dict(s="banana", maxLen=3),
       dict(s="aabbaabbaa", maxLen=4)]),

    # ------------------------------------------------------------------ 9010 counting DP
    P(9010, "medium", "climbWithoutRepeat", "n: int, steps: List[int]", "int",
      "You are climbing to a height of n units. In one move you may climb any amount listed in "
      "steps (all values distinct), but you may never climb the same amount in two consecutive "
      "moves. Count the ordered sequences of moves that end exactly at height n. Return the count "
      "modulo 10^9 + 7.",
      [(dict(n=4, steps=[1, 2, 3]), 3, "The valid sequences are 1+3, 3+1 and 1+2+1."),
       (dict(n=3, steps=[3]), 1, None)],
      ["1 <= n <= 1000", "1 <= steps.length <= 20", "1 <= steps[i] <= n", "All values in steps are distinct."],
      code("""
          class Solution:
              def climbWithoutRepeat(self, n: int, steps: List[int]) -> int:
                  MOD = 10**9 + 7
                  m = len(steps)
                  # end[h][j]: sequences reaching h whose last move is steps[j]
                  end = [[0] * m for _ in range(n + 1)]
                  total = [0] * (n + 1)
                  total[0] = 1
                  for h in range(1, n + 1):
                      for j, st in enumerate(steps):
                          if st <= h:
                              end[h][j] = (total[h - st] - end[h - st][j]) % MOD
                      total[h] = sum(end[h]) % MOD
                  return total[n]
      """),
      [(dict(n=1, steps=[1]), 1), (dict(n=2, steps=[1]), 0), dict(n=5, steps=[1, 2]),
       dict(n=10, steps=[1, 2, 3]), dict(n=7, steps=[2, 5]), dict(n=1000, steps=[1, 2, 3, 4, 5]),
       dict(n=50, steps=[7, 3, 11]), (dict(n=6, steps=[4, 5]), 0), dict(n=12, steps=[2, 4, 6])]),

    # ------------------------------------------------------------------ 9011 edit distance DP
    P(9011, "medium", "weightedEditDistance",
      "source: str, target: str, insertCost: int, deleteCost: int, replaceCost: int", "int",
      "You are given two strings source and target and three positive integers insertCost, "
      "deleteCost and replaceCost. You may insert a character anywhere in source (paying "
      "insertCost), delete a character of source (paying deleteCost) or replace a character of "
      "source by another character (paying replaceCost). Return the minimum total cost to turn "
      "source into target.",
      [(dict(source="abc", target="adc", insertCost=1, deleteCost=1, replaceCost=3), 2,
        "Deleting 'b' and inserting 'd' costs 2, which is cheaper than one replacement."),
       (dict(source="", target="xy", insertCost=4, deleteCost=1, replaceCost=1), 8, None)],
      ["0 <= source.length, target.length <= 500", "source and target consist of lowercase English letters.",
       "1 <= insertCost, deleteCost, replaceCost <= 1000"],
      code("""
          class Solution:
              def weightedEditDistance(self, source: str, target: str, insertCost: int,
                                       deleteCost: int, replaceCost: int) -> int:
                  m, n = len(source), len(target)
                  prev = [j * insertCost for j in range(n + 1)]
                  for i in range(1, m + 1):
                      cur = [i * deleteCost] + [0] * n
                      for j in range(1, n + 1):
                          if source[i - 1] == target[j - 1]:
                              best = prev[j - 1]
                          else:
                              best = prev[j - 1] + replaceCost
                          best = min(best, prev[j] + deleteCost, cur[j - 1] + insertCost)
                          cur[j] = best
                      prev = cur
                  return prev[n]
      """),
      [(dict(source="same", target="same", insertCost=5, deleteCost=5, replaceCost=5), 0),
       (dict(source="abc", target="", insertCost=2, deleteCost=5, replaceCost=1), 15),
       (dict(source="sunday", target="saturday", insertCost=1, deleteCost=1, replaceCost=1), 3),
       dict(source="abcdef", target="azced", insertCost=2, deleteCost=3, replaceCost=1),
       (dict(source="aaaa", target="bbbb", insertCost=1, deleteCost=1, replaceCost=5), 8),
       (dict(source="aaaa", target="bbbb", insertCost=1, deleteCost=1, replaceCost=1), 4),
       (dict(source="ab", target="ba", insertCost=1, deleteCost=1, replaceCost=10), 2),
       dict(source="kitchen", target="mitten", insertCost=3, deleteCost=2, replaceCost=2),
       dict(source="abcabc", target="cbacba", insertCost=4, deleteCost=1, replaceCost=3)]),

    # ------------------------------------------------------------------ 9012 binary search on answer
    P(9012, "hard", "kthSmallestPairSum", "a: List[int], b: List[int], k: int", "int",
      "You are given two integer arrays a and b, each sorted in non-decreasing order, and an "
      "integer k. Consider the a.length * b.length sums a[i] + b[j] over all index pairs (i, j); "
      "equal sums coming from different pairs are counted separately. Return the k-th smallest of "
      "these sums (1-indexed).",
      [(dict(a=[1, 4, 6], b=[2, 3], k=4), 7, "The sums in order are 3, 4, 6, 7, 8, 9."),
       (dict(a=[0, 0], b=[5, 5], k=3), 5, None)],
      ["1 <= a.length, b.length <= 5 * 10^4", "-10^9 <= a[i], b[j] <= 10^9",
       "a and b are sorted in non-decreasing order.", "1 <= k <= a.length * b.length"],
      code("""
          class Solution:
              def kthSmallestPairSum(self, a: List[int], b: List[int], k: int) -> int:
                  def count_at_most(x: int) -> int:
                      j = len(b) - 1
                      cnt = 0
                      for v in a:
                          while j >= 0 and v + b[j] > x:
                              j -= 1
                          if j < 0:
                              break
                          cnt += j + 1
                      return cnt

                  lo, hi = a[0] + b[0], a[-1] + b[-1]
                  while lo < hi:
                      mid = (lo + hi) // 2
                      if count_at_most(mid) >= k:
                          hi = mid
                      else:
                          lo = mid + 1
                  return lo
      """),
      [(dict(a=[1], b=[1], k=1), 2), (dict(a=[-5, 0, 5], b=[-5, 0, 5], k=1), -10),
       (dict(a=[-5, 0, 5], b=[-5, 0, 5], k=9), 10), (dict(a=[-5, 0, 5], b=[-5, 0, 5], k=5), 0),
       (dict(a=[1, 2, 3, 4], b=[10, 20], k=5), 21),
       (dict(a=[-1000000000], b=[1000000000, 1000000000], k=2), 0),
       dict(a=[1, 1, 2, 2, 3], b=[0, 1, 1], k=7), dict(a=[2, 3, 5, 8, 13], b=[1, 4, 9, 16], k=11),
       dict(a=[-9, -3, 0, 4, 4, 7], b=[-8, -2, 5], k=10)]),

    # ------------------------------------------------------------------ 9013 binary search + greedy
    P(9013, "medium", "minTruckCapacity", "weights: List[int], days: int, maxItems: int", "int",
      "A truck delivers packages in the given order; weights[i] is the weight of the i-th package. "
      "Each day the truck takes the next one or more waiting packages: their total weight may not "
      "exceed the truck's capacity and their number may not exceed maxItems. Return the smallest "
      "integer capacity that allows all packages to be delivered within days days, or -1 if no "
      "capacity is large enough.",
      [(dict(weights=[3, 2, 2, 4, 1, 4], days=3, maxItems=2), 6,
        "Each day must carry exactly two packages: [3,2], [2,4], [1,4]."),
       (dict(weights=[1, 1, 1], days=1, maxItems=2), -1, "At most 2 packages can be delivered in 1 day.")],
      ["1 <= weights.length <= 5 * 10^4", "1 <= weights[i] <= 500", "1 <= days <= weights.length",
       "1 <= maxItems <= weights.length"],
      code("""
          class Solution:
              def minTruckCapacity(self, weights: List[int], days: int, maxItems: int) -> int:
                  if len(weights) > days * maxItems:
                      return -1

                  def feasible(cap: int) -> bool:
                      used = 1
                      load = items = 0
                      for w in weights:
                          if load + w > cap or items == maxItems:
                              used += 1
                              load = items = 0
                          load += w
                          items += 1
                      return used <= days

                  lo, hi = max(weights), sum(weights)
                  while lo < hi:
                      mid = (lo + hi) // 2
                      if feasible(mid):
                          hi = mid
                      else:
                          lo = mid + 1
                  return lo
      """),
      [(dict(weights=[5], days=1, maxItems=1), 5), (dict(weights=[1, 2, 3, 4, 5], days=5, maxItems=1), 5),
       (dict(weights=[1, 2, 3, 4, 5], days=1, maxItems=5), 15),
       (dict(weights=[1, 2, 3, 4, 5], days=2, maxItems=5), 9),
       (dict(weights=[1, 2, 3, 4, 5], days=2, maxItems=2), -1),
       (dict(weights=[1, 2, 3, 4, 5], days=3, maxItems=2), 7),
       (dict(weights=[10, 1, 1, 1, 1, 1, 1], days=2, maxItems=6), 10),
       (dict(weights=[4, 4, 4, 4], days=4, maxItems=1), 4),
       dict(weights=[6, 3, 8, 2, 7, 1], days=3, maxItems=3),
       dict(weights=[2, 9, 4, 4, 1, 7, 3, 3, 5], days=4, maxItems=3)]),

    # ------------------------------------------------------------------ 9014 hashing + heap
    P(9014, "medium", "topFrequentValues", "nums: List[int], k: int", "List[int]",
      "Given an integer array nums and an integer k, return the k distinct values of nums that "
      "occur most often. Order the result by frequency from highest to lowest; values with equal "
      "frequency are ordered from smallest to largest, and the same rule decides which values are "
      "kept when there is a tie at the cut-off.",
      [(dict(nums=[4, 1, 4, 2, 2, 4, 3], k=2), [4, 2], "4 occurs three times and 2 twice."),
       (dict(nums=[7, 5, 7, 5, 9], k=3), [5, 7, 9], None)],
      ["1 <= nums.length <= 10^5", "-10^9 <= nums[i] <= 10^9",
       "1 <= k <= the number of distinct values in nums"],
      code("""
          class Solution:
              def topFrequentValues(self, nums: List[int], k: int) -> List[int]:
                  freq = Counter(nums)
                  return nsmallest(k, freq, key=lambda v: (-freq[v], v))
      """),
      [(dict(nums=[1], k=1), [1]), (dict(nums=[3, 3, -1, -1, 2], k=2), [-1, 3]),
       (dict(nums=[5, 4, 3, 2, 1], k=3), [1, 2, 3]), (dict(nums=[9, 9, 9, 8, 8, 7], k=3), [9, 8, 7]),
       (dict(nums=[0, 0, 1, 1, 2, 2, 3], k=1), [0]), dict(nums=[-5, -5, 10, 10, 10, -5, 3, 3], k=2),
       dict(nums=[100, 200, 100, 300, 200, 100], k=3), (dict(nums=[2, 2, 1, 1, 1, 2, 3], k=2), [1, 2])]),

    # ------------------------------------------------------------------ 9015 Dijkstra on states
    P(9015, "hard", "shortestRouteWithFuel",
      "n: int, roads: List[List[int]], stations: List[int], capacity: int", "int",
      "There are n cities numbered 0 to n - 1 joined by two-way roads roads[i] = [u_i, v_i, w_i]; "
      "driving road i covers w_i units of distance and burns w_i units of fuel. The car's tank "
      "holds at most capacity units and you start at city 0 with a full tank. A road can be taken "
      "only if the tank holds at least w_i units when you enter it. Every city listed in stations "
      "has a fuel station where the tank is refilled to full for free. Return the minimum total "
      "distance needed to reach city n - 1, or -1 if it cannot be reached.",
      [(dict(n=4, roads=[[0, 1, 4], [1, 3, 4], [0, 2, 3], [2, 3, 2]], stations=[1], capacity=4), 8,
        "The route 0 -> 2 -> 3 needs 5 units without a refill. Going 0 -> 1 (refill) -> 3 covers 8."),
       (dict(n=3, roads=[[0, 1, 5], [1, 2, 1]], stations=[], capacity=4), -1, None)],
      ["2 <= n <= 100", "0 <= roads.length <= 1000", "0 <= u_i, v_i < n, u_i != v_i", "1 <= w_i <= 100",
       "0 <= stations.length <= n, all stations are distinct", "1 <= capacity <= 100"],
      code("""
          class Solution:
              def shortestRouteWithFuel(self, n: int, roads: List[List[int]], stations: List[int],
                                        capacity: int) -> int:
                  graph = [[] for _ in range(n)]
                  for u, v, w in roads:
                      graph[u].append((v, w))
                      graph[v].append((u, w))
                  refill = set(stations)
                  INF = float('inf')
                  dist = [[INF] * (capacity + 1) for _ in range(n)]
                  dist[0][capacity] = 0
                  heap = [(0, 0, capacity)]
                  while heap:
                      d, u, fuel = heappop(heap)
                      if d > dist[u][fuel]:
                          continue
                      if u == n - 1:
                          return d
                      for v, w in graph[u]:
                          if w <= fuel:
                              nf = capacity if v in refill else fuel - w
                              if d + w < dist[v][nf]:
                                  dist[v][nf] = d + w
                                  heappush(heap, (d + w, v, nf))
                  return -1
      """),
      [(dict(n=2, roads=[[0, 1, 3]], stations=[], capacity=3), 3),
       (dict(n=2, roads=[[0, 1, 3]], stations=[], capacity=2), -1),
       (dict(n=3, roads=[[0, 1, 2], [1, 2, 2], [0, 2, 10]], stations=[], capacity=4), 4),
       (dict(n=3, roads=[[0, 1, 2], [1, 2, 2], [0, 2, 10]], stations=[], capacity=3), -1),
       (dict(n=3, roads=[[0, 1, 2], [1, 2, 2], [0, 2, 10]], stations=[1], capacity=3), 4),
       (dict(n=5, roads=[[0, 1, 3], [1, 2, 3], [2, 4, 3], [0, 3, 5], [3, 4, 5]], stations=[2], capacity=6), 9),
       (dict(n=5, roads=[[0, 1, 3], [1, 2, 3], [2, 4, 3], [0, 3, 5], [3, 4, 5]], stations=[3], capacity=5), 10),
       (dict(n=4, roads=[[0, 2, 3], [2, 3, 3], [2, 1, 1]], stations=[1], capacity=4), 8),
       (dict(n=3, roads=[], stations=[0, 1, 2], capacity=100), -1),
       (dict(n=6, roads=[[0, 1, 2], [1, 2, 2], [2, 5, 2], [0, 3, 1], [3, 4, 1], [4, 5, 4], [1, 4, 3]],
            stations=[3], capacity=5), 6)]),

    # ------------------------------------------------------------------ 9016 topological levels
    P(9016, "medium", "minSemesters", "n: int, prerequisites: List[List[int]]", "int",
      "There are n courses labelled 0 to n - 1. Each pair prerequisites[i] = [a_i, b_i] means that "
      "course b_i must be finished in a strictly earlier semester than course a_i. Any number of "
      "courses can be taken in the same semester. Return how many semesters it takes at the least "
      "to finish every course, or -1 if the requirements make that impossible.",
      [(dict(n=4, prerequisites=[[1, 0], [2, 0], [3, 1], [3, 2]]), 3,
        "Take course 0, then courses 1 and 2, then course 3."),
       (dict(n=2, prerequisites=[[0, 1], [1, 0]]), -1, None)],
      ["1 <= n <= 10^4", "0 <= prerequisites.length <= 5 * 10^4", "0 <= a_i, b_i < n"],
      code("""
          class Solution:
              def minSemesters(self, n: int, prerequisites: List[List[int]]) -> int:
                  after = [[] for _ in range(n)]
                  indeg = [0] * n
                  for a, b in prerequisites:
                      after[b].append(a)
                      indeg[a] += 1
                  level = [i for i in range(n) if indeg[i] == 0]
                  done = 0
                  semesters = 0
                  while level:
                      semesters += 1
                      done += len(level)
                      nxt = []
                      for u in level:
                          for v in after[u]:
                              indeg[v] -= 1
                              if indeg[v] == 0:
                                  nxt.append(v)
                      level = nxt
                  return semesters if done == n else -1
      """),
      [(dict(n=1, prerequisites=[]), 1), (dict(n=3, prerequisites=[]), 1),
       (dict(n=3, prerequisites=[[1, 0], [2, 1]]), 3),
       (dict(n=5, prerequisites=[[1, 0], [2, 0], [3, 2], [4, 3], [4, 1]]), 4),
       (dict(n=3, prerequisites=[[0, 0]]), -1), (dict(n=4, prerequisites=[[1, 0], [1, 0]]), 2),
       (dict(n=6, prerequisites=[[5, 4], [4, 3], [2, 1], [1, 0]]), 3),
       (dict(n=4, prerequisites=[[1, 0], [2, 1], [3, 2], [1, 3]]), -1),
       dict(n=7, prerequisites=[[6, 0], [6, 1], [5, 6], [4, 5], [3, 2], [4, 3]])]),

    # ------------------------------------------------------------------ 9017 grid BFS
    P(9017, "medium", "largestIslandPerimeter", "grid: List[List[int]]", "int",
      "You are given an m x n binary grid where 1 is land and 0 is water. An island is a maximal "
      "group of land cells connected through their sides. The perimeter of an island is the number "
      "of sides of its cells that touch water or the border of the grid. Return the largest "
      "perimeter among all islands, or 0 if the grid has no land.",
      [(dict(grid=[[1, 1, 0], [0, 1, 0], [0, 0, 1]]), 8,
        "The island of three cells has perimeter 8; the single cell in the corner has perimeter 4."),
       (dict(grid=[[0, 0], [0, 0]]), 0, None)],
      ["1 <= m, n <= 100", "grid[i][j] is 0 or 1"],
      code("""
          class Solution:
              def largestIslandPerimeter(self, grid: List[List[int]]) -> int:
                  m, n = len(grid), len(grid[0])
                  seen = [[False] * n for _ in range(m)]
                  best = 0
                  for sr in range(m):
                      for sc in range(n):
                          if grid[sr][sc] != 1 or seen[sr][sc]:
                              continue
                          seen[sr][sc] = True
                          stack = [(sr, sc)]
                          perim = 0
                          while stack:
                              r, c = stack.pop()
                              for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                                  if 0 <= nr < m and 0 <= nc < n and grid[nr][nc] == 1:
                                      if not seen[nr][nc]:
                                          seen[nr][nc] = True
                                          stack.append((nr, nc))
                                  else:
                                      perim += 1
                          best = max(best, perim)
                  return best
      """),
      [(dict(grid=[[1]]), 4), (dict(grid=[[1, 1], [1, 1]]), 8),
       (dict(grid=[[1, 1, 1], [1, 0, 1], [1, 1, 1]]), 16), (dict(grid=[[1, 0, 1, 0, 1]]), 4),
       (dict(grid=[[1, 1, 1, 1, 1]]), 12), (dict(grid=[[0, 1, 0], [1, 1, 1], [0, 1, 0]]), 12),
       (dict(grid=[[1, 0], [0, 1]]), 4), dict(grid=[[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]]),
       dict(grid=[[1, 0, 1, 1], [1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]])]),

    # ------------------------------------------------------------------ 9018 prefix xor
    P(9018, "medium", "countXorSubarrays", "nums: List[int], target: int", "int",
      "Given an array of non-negative integers nums and a non-negative integer target, return the "
      "number of non-empty contiguous subarrays whose elements have a bitwise XOR equal to target.",
      [(dict(nums=[1, 2, 3, 0], target=3), 3, "The subarrays are [1,2], [3] and [3,0]."),
       (dict(nums=[5], target=0), 0, None)],
      ["1 <= nums.length <= 10^5", "0 <= nums[i], target < 2^30"],
      code("""
          class Solution:
              def countXorSubarrays(self, nums: List[int], target: int) -> int:
                  seen = {0: 1}
                  acc = 0
                  total = 0
                  for x in nums:
                      acc ^= x
                      total += seen.get(acc ^ target, 0)
                      seen[acc] = seen.get(acc, 0) + 1
                  return total
      """),
      [(dict(nums=[0], target=0), 1), (dict(nums=[0, 0, 0], target=0), 6),
       (dict(nums=[1, 1, 1, 1], target=1), 6), (dict(nums=[1, 1, 1, 1], target=0), 4),
       dict(nums=[7, 3, 5, 1, 6], target=2), (dict(nums=[8], target=8), 1),
       (dict(nums=[1, 2, 4, 8], target=15), 1), (dict(nums=[5, 5, 5, 5, 5], target=5), 9),
       dict(nums=[6, 2, 4, 6, 2, 4, 0, 6], target=4)]),

    # ------------------------------------------------------------------ 9019 binary trie, offline
    P(9019, "hard", "maxXorAtLeast", "nums: List[int], queries: List[List[int]]", "List[int]",
      "You are given an array nums of non-negative integers and a list of queries, where "
      "queries[i] = [x_i, lo_i]. The answer to query i is the largest value of x_i XOR nums[j] over "
      "all indices j with nums[j] >= lo_i, or -1 if no element of nums is at least lo_i. Return the "
      "answers in query order.",
      [(dict(nums=[0, 1, 2, 3, 4], queries=[[3, 2], [1, 5], [6, 0]]), [7, -1, 7],
        "Query 0 may use 2, 3 or 4 and 3 XOR 4 = 7. No element is at least 5. 6 XOR 1 = 7."),
       (dict(nums=[8, 2], queries=[[8, 3]]), [0], None)],
      ["1 <= nums.length, queries.length <= 10^5", "0 <= nums[j], x_i, lo_i <= 10^9"],
      code("""
          class Solution:
              def maxXorAtLeast(self, nums: List[int], queries: List[List[int]]) -> List[int]:
                  BITS = 30
                  zero, one = [0], [0]  # child arrays of the binary trie; node 0 is the root

                  def insert(v: int) -> None:
                      node = 0
                      for b in range(BITS - 1, -1, -1):
                          kids = one if (v >> b) & 1 else zero
                          if not kids[node]:
                              kids[node] = len(zero)
                              zero.append(0)
                              one.append(0)
                          node = kids[node]

                  def best(x: int) -> int:
                      node = 0
                      res = 0
                      for b in range(BITS - 1, -1, -1):
                          want = one if not (x >> b) & 1 else zero
                          if want[node]:
                              res |= 1 << b
                              node = want[node]
                          else:
                              node = (zero if want is one else one)[node]
                      return res

                  values = sorted(nums, reverse=True)
                  order = sorted(range(len(queries)), key=lambda i: -queries[i][1])
                  ans = [-1] * len(queries)
                  p = 0
                  for qi in order:
                      x, lo = queries[qi]
                      while p < len(values) and values[p] >= lo:
                          insert(values[p])
                          p += 1
                      if p:
                          ans[qi] = best(x)
                  return ans
      """),
      [(dict(nums=[5], queries=[[5, 0], [5, 5], [5, 6]]), [0, 0, -1]),
       (dict(nums=[0], queries=[[0, 0], [7, 1]]), [0, -1]),
       dict(nums=[1, 2, 4, 8, 16], queries=[[31, 0], [31, 9], [0, 3], [16, 16]]),
       (dict(nums=[1000000000, 0], queries=[[1000000000, 0], [0, 1]]), [1000000000, 1000000000]),
       dict(nums=[3, 10, 5, 25, 2, 8], queries=[[0, 0], [5, 6], [25, 26], [7, 10]]),
       (dict(nums=[6, 6, 6], queries=[[1, 6], [6, 7]]), [7, -1]),
       dict(nums=[12, 7, 0, 31, 18], queries=[[13, 8], [13, 19], [20, 0], [1, 40], [31, 31]]),
       dict(nums=[536870911, 1, 268435456], queries=[[0, 2], [536870911, 0], [805306368, 300000000]])]),

    # ------------------------------------------------------------------ 9020 greedy
    P(9020, "medium", "minJumpsToEnd", "nums: List[int]", "int",
      "You are given an array nums of non-negative integers. You start at index 0, and from index "
      "i you may jump to any index j with i < j <= i + nums[i]. Return the minimum number of jumps "
      "needed to reach the last index, or -1 if the last index cannot be reached.",
      [(dict(nums=[1, 4, 0, 0, 2, 0, 1]), 3, "Jump 0 -> 1 -> 4 -> 6."),
       (dict(nums=[2, 1, 0, 3]), -1, "Index 2 is the farthest reachable index and it allows no jump.")],
      ["1 <= nums.length <= 10^5", "0 <= nums[i] <= 10^5"],
      code("""
          class Solution:
              def minJumpsToEnd(self, nums: List[int]) -> int:
                  n = len(nums)
                  jumps = 0
                  cur_end = 0
                  farthest = 0
                  for i in range(n - 1):
                      if i > farthest:
                          return -1
                      farthest = max(farthest, i + nums[i])
                      if i == cur_end:
                          if farthest <= i:
                              return -1
                          jumps += 1
                          cur_end = farthest
                          if cur_end >= n - 1:
                              break
                  return jumps
      """),
      [(dict(nums=[0]), 0), (dict(nums=[5]), 0), (dict(nums=[0, 1]), -1), (dict(nums=[1, 1, 1, 1]), 3),
       (dict(nums=[10, 0, 0, 0, 0]), 1), (dict(nums=[1, 0, 5]), -1), (dict(nums=[2, 0, 2, 0, 1]), 2),
       (dict(nums=[3, 1, 1, 1, 0, 5]), -1), (dict(nums=[4, 1, 1, 3, 1, 1, 1]), 2),
       dict(nums=[2, 3, 1, 0, 2, 4, 1, 0, 0, 1])]),

    # ------------------------------------------------------------------ 9021 greedy on intervals
    P(9021, "medium", "minVisits", "shifts: List[List[int]]", "int",
      "A supervisor wants to drop in on every work shift. Each shift is a closed time range "
      "shifts[i] = [a_i, b_i] with integer endpoints, and a visit at integer time t covers every "
      "shift with a_i <= t <= b_i. Return the minimum number of visits needed so that every shift "
      "is covered by at least one visit.",
      [(dict(shifts=[[1, 4], [2, 3], [5, 7], [6, 9]]), 2, "Visits at times 3 and 7 cover all four shifts."),
       (dict(shifts=[[1, 1], [2, 2], [3, 3]]), 3, None)],
      ["1 <= shifts.length <= 10^5", "-10^9 <= a_i <= b_i <= 10^9"],
      code("""
          class Solution:
              def minVisits(self, shifts: List[List[int]]) -> int:
                  visits = 0
                  last = None
                  for a, b in sorted(shifts, key=lambda s: s[1]):
                      if last is None or a > last:
                          visits += 1
                          last = b
                  return visits
      """),
      [(dict(shifts=[[0, 0]]), 1), (dict(shifts=[[1, 10], [2, 3], [4, 5], [6, 7]]), 3),
       (dict(shifts=[[1, 5], [1, 5], [1, 5]]), 1), (dict(shifts=[[1, 2], [2, 3], [3, 4], [4, 5]]), 2),
       (dict(shifts=[[5, 6], [1, 2], [3, 4]]), 3), (dict(shifts=[[-5, 0], [-3, -1], [0, 2]]), 2),
       dict(shifts=[[1, 100], [50, 60], [55, 58], [59, 70], [71, 80]]),
       (dict(shifts=[[0, 1000000000]]), 1),
       dict(shifts=[[3, 8], [1, 4], [7, 7], [2, 2], [9, 12], [10, 11], [5, 6]])]),

    # ------------------------------------------------------------------ 9022 2D prefix sums
    P(9022, "medium", "countLightSquares", "grid: List[List[int]], limit: int", "int",
      "Given an m x n grid of non-negative integers and an integer limit, count the square "
      "sub-grids (formed by k consecutive rows and k consecutive columns, for any k >= 1) whose "
      "elements sum to at most limit.",
      [(dict(grid=[[1, 2], [3, 4]], limit=4), 4, "All four 1 x 1 squares qualify; the 2 x 2 square sums to 10."),
       (dict(grid=[[0, 0, 1], [0, 0, 1]], limit=1), 7, None)],
      ["1 <= m, n <= 100", "0 <= grid[i][j] <= 10^4", "0 <= limit <= 10^9"],
      code("""
          class Solution:
              def countLightSquares(self, grid: List[List[int]], limit: int) -> int:
                  m, n = len(grid), len(grid[0])
                  pre = [[0] * (n + 1) for _ in range(m + 1)]
                  for i in range(m):
                      for j in range(n):
                          pre[i + 1][j + 1] = grid[i][j] + pre[i][j + 1] + pre[i + 1][j] - pre[i][j]
                  count = 0
                  for i in range(m):
                      for j in range(n):
                          size = 1
                          while i + size <= m and j + size <= n:
                              s = (pre[i + size][j + size] - pre[i][j + size]
                                   - pre[i + size][j] + pre[i][j])
                              if s > limit:
                                  break  # values are non-negative: larger squares are heavier
                              count += 1
                              size += 1
                  return count
      """),
      [(dict(grid=[[5]], limit=4), 0), (dict(grid=[[5]], limit=5), 1), (dict(grid=[[0, 0], [0, 0]], limit=0), 5),
       (dict(grid=[[1, 1, 1], [1, 1, 1], [1, 1, 1]], limit=4), 13),
       (dict(grid=[[1, 1, 1], [1, 1, 1], [1, 1, 1]], limit=9), 14), (dict(grid=[[1, 2, 3, 4]], limit=3), 3),
       dict(grid=[[2, 0, 0], [0, 0, 0], [0, 0, 2]], limit=1),
       dict(grid=[[3, 1, 2, 5], [0, 4, 1, 1], [2, 2, 0, 3]], limit=8),
       dict(grid=[[0, 1, 0, 1, 0], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1]], limit=5)]),

    # ------------------------------------------------------------------ 9023 sliding window
    P(9023, "hard", "shortestCoveringSubstring", "s: str, t: str", "str",
      "Given strings s and t, find the shortest substring of s that contains every character of t "
      "at least as many times as it occurs in t. If several substrings have that shortest length, "
      "return the one that starts earliest. Return an empty string if no such substring exists.",
      [(dict(s="xaybzaxb", t="abx"), "axb", "\"xayb\" and \"bzax\" also qualify, but \"axb\" is shorter."),
       (dict(s="aab", t="abb"), "", "s contains only one 'b'.")],
      ["1 <= s.length, t.length <= 10^5", "s and t consist of lowercase English letters."],
      code("""
          class Solution:
              def shortestCoveringSubstring(self, s: str, t: str) -> str:
                  need = Counter(t)
                  missing = len(t)
                  best_len, best_start = len(s) + 1, 0
                  left = 0
                  for right, ch in enumerate(s):
                      if need[ch] > 0:
                          missing -= 1
                      need[ch] -= 1
                      if missing == 0:
                          while need[s[left]] < 0:
                              need[s[left]] += 1
                              left += 1
                          if right - left + 1 < best_len:
                              best_len, best_start = right - left + 1, left
                          need[s[left]] += 1
                          missing += 1
                          left += 1
                  return "" if best_len > len(s) else s[best_start:best_start + best_len]
      """),
      [(dict(s="a", t="a"), "a"), (dict(s="a", t="b"), ""), (dict(s="abc", t="cba"), "abc"),
       (dict(s="aaab", t="aab"), "aab"), (dict(s="bbaac", t="abc"), "baac"), (dict(s="abcabc", t="cc"), "cabc"),
       (dict(s="zzzz", t="zz"), "zz"), dict(s="xyyzyzyx", t="xyz"), (dict(s="ab", t="abc"), ""),
       dict(s="mississippi", t="sip"), dict(s="qwertyqwerty", t="yq")]),

    # ------------------------------------------------------------------ 9024 monotonic deques
    P(9024, "medium", "longestCalmSubarray", "nums: List[int], limit: int", "int",
      "Given an integer array nums and a non-negative integer limit, return the length of the "
      "longest non-empty contiguous subarray in which the difference between the largest and the "
      "smallest element is at most limit.",
      [(dict(nums=[5, 1, 3, 4, 9, 2], limit=3), 3, "In [1,3,4] the difference is 3."),
       (dict(nums=[7, 7, 7], limit=0), 3, None)],
      ["1 <= nums.length <= 10^5", "-10^9 <= nums[i] <= 10^9", "0 <= limit <= 2 * 10^9"],
      code("""
          class Solution:
              def longestCalmSubarray(self, nums: List[int], limit: int) -> int:
                  maxq, minq = deque(), deque()
                  left = 0
                  best = 0
                  for right, x in enumerate(nums):
                      while maxq and nums[maxq[-1]] <= x:
                          maxq.pop()
                      maxq.append(right)
                      while minq and nums[minq[-1]] >= x:
                          minq.pop()
                      minq.append(right)
                      while nums[maxq[0]] - nums[minq[0]] > limit:
                          left += 1
                          if maxq[0] < left:
                              maxq.popleft()
                          if minq[0] < left:
                              minq.popleft()
                      best = max(best, right - left + 1)
                  return best
      """),
      [(dict(nums=[1], limit=0), 1), (dict(nums=[1, 2, 3, 4, 5], limit=0), 1),
       (dict(nums=[1, 2, 3, 4, 5], limit=10), 5), (dict(nums=[1, 3, 5, 7, 9], limit=2), 2),
       dict(nums=[4, 8, 5, 1, 7, 9], limit=6), dict(nums=[2, 2, 2, 3, 3, 1, 1, 1], limit=1),
       (dict(nums=[-3, -1, -2, 5, 4, 6], limit=2), 3), (dict(nums=[1000000000, -1000000000], limit=0), 1),
       (dict(nums=[1000000000, -1000000000], limit=2000000000), 2), dict(nums=[3, 6, 2, 5, 5, 4, 8, 1, 4], limit=3)]),

    # ------------------------------------------------------------------ 9025 simulation
    P(9025, "medium", "counterSpiral", "matrix: List[List[int]]", "List[int]",
      "List the elements of an m x n matrix in counter-clockwise spiral order: start "
      "at the top-left corner, walk down the first column, then right along the bottom row, then "
      "up the last column, then left along the top row, and keep spiralling inward in the same "
      "way until every element has been visited exactly once.",
      [(dict(matrix=[[1, 2, 3], [4, 5, 6], [7, 8, 9]]), [1, 4, 7, 8, 9, 6, 3, 2, 5], None),
       (dict(matrix=[[1, 2, 3, 4]]), [1, 2, 3, 4], "The first column is just [1]; then the walk continues right along the only row.")],
      ["1 <= m, n <= 50", "-100 <= matrix[i][j] <= 100"],
      code("""
          class Solution:
              def counterSpiral(self, matrix: List[List[int]]) -> List[int]:
                  res = []
                  top, bottom = 0, len(matrix) - 1
                  left, right = 0, len(matrix[0]) - 1
                  while top <= bottom and left <= right:
                      for r in range(top, bottom + 1):
                          res.append(matrix[r][left])
                      left += 1
                      if left > right:
                          break
                      for c in range(left, right + 1):
                          res.append(matrix[bottom][c])
                      bottom -= 1
                      if top > bottom:
                          break
                      for r in range(bottom, top - 1, -1):
                          res.append(matrix[r][right])
                      right -= 1
                      if left > right:
                          break
                      for c in range(right, left - 1, -1):
                          res.append(matrix[top][c])
                      top += 1
                  return res
      """),
      [(dict(matrix=[[7]]), [7]), (dict(matrix=[[1], [2], [3]]), [1, 2, 3]), (dict(matrix=[[1, 2], [3, 4]]), [1, 3, 4, 2]),
       (dict(matrix=[[1, 2, 3], [4, 5, 6]]), [1, 4, 5, 6, 3, 2]), (dict(matrix=[[1, 2], [3, 4], [5, 6]]), [1, 3, 5, 6, 4, 2]),
       dict(matrix=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]),
       dict(matrix=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
       dict(matrix=[[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]),
       dict(matrix=[[-1, 0, 1, 2, 3], [4, 5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16, 17, 18], [19, 20, 21, 22, 23]])]),

    # ------------------------------------------------------------------ 9026 simulation with hashing
    P(9026, "medium", "farthestReach", "commands: str, obstacles: List[List[int]], repeat: int", "int",
      "A robot starts at point (0, 0) on an infinite grid facing north (the +y direction). It runs "
      "the instruction string commands repeat times in a row: 'G' moves one unit forward, 'L' "
      "turns 90 degrees left and 'R' turns 90 degrees right. If the point the robot would move to "
      "is listed in obstacles, that 'G' does nothing. Return the largest value of x^2 + y^2 over "
      "all points the robot occupies at any moment.",
      [(dict(commands="GGRG", obstacles=[], repeat=2), 13,
        "After the first run the robot is at (1, 2) facing east; the second run passes (3, 2)."),
       (dict(commands="GLG", obstacles=[[0, 1]], repeat=1), 1, "The first move is blocked; the robot then reaches (-1, 0).")],
      ["1 <= commands.length <= 100", "commands consists of 'G', 'L' and 'R'", "1 <= repeat <= 100",
       "0 <= obstacles.length <= 1000", "-1000 <= obstacles[i][0], obstacles[i][1] <= 1000",
       "(0, 0) is not an obstacle"],
      code("""
          class Solution:
              def farthestReach(self, commands: str, obstacles: List[List[int]], repeat: int) -> int:
                  blocked = {(x, y) for x, y in obstacles}
                  dirs = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # north, east, south, west
                  d = 0
                  x = y = 0
                  best = 0
                  for _ in range(repeat):
                      for ch in commands:
                          if ch == 'L':
                              d = (d + 3) % 4
                          elif ch == 'R':
                              d = (d + 1) % 4
                          else:
                              nx, ny = x + dirs[d][0], y + dirs[d][1]
                              if (nx, ny) not in blocked:
                                  x, y = nx, ny
                                  best = max(best, x * x + y * y)
                  return best
      """),
      [(dict(commands="L", obstacles=[], repeat=100), 0), (dict(commands="G", obstacles=[], repeat=100), 10000),
       (dict(commands="GL", obstacles=[], repeat=4), 2), dict(commands="GGLLGG", obstacles=[], repeat=3),
       dict(commands="GRG", obstacles=[[1, 1]], repeat=5), (dict(commands="GGGG", obstacles=[[0, 3]], repeat=2), 4),
       dict(commands="GLGLGGRG", obstacles=[[-1, 0], [2, 2]], repeat=10),
       (dict(commands="RRGGG", obstacles=[[0, -2]], repeat=1), 1),
       dict(commands="GGRGGRGL", obstacles=[[3, 1], [-2, -4]], repeat=7)]),

    # ------------------------------------------------------------------ 9027 LIS-style DP
    P(9027, "medium", "longestCloseIncreasing", "nums: List[int], d: int", "int",
      "Given an integer array nums and a non-negative integer d, return the length of the longest "
      "strictly increasing subsequence of nums in which every two consecutive chosen elements "
      "differ by at most d. A subsequence keeps the original order of elements but may skip some "
      "of them.",
      [(dict(nums=[1, 5, 2, 3, 7, 4], d=2), 4, "Choose 1, 2, 3, 4."),
       (dict(nums=[10, 1], d=5), 1, None)],
      ["1 <= nums.length <= 2000", "-10^9 <= nums[i] <= 10^9", "0 <= d <= 10^9"],
      code("""
          class Solution:
              def longestCloseIncreasing(self, nums: List[int], d: int) -> int:
                  n = len(nums)
                  best = [1] * n
                  for i in range(n):
                      for j in range(i):
                          if nums[j] < nums[i] <= nums[j] + d and best[j] + 1 > best[i]:
                              best[i] = best[j] + 1
                  return max(best)
      """),
      [(dict(nums=[1], d=0), 1), (dict(nums=[1, 2, 3], d=0), 1), (dict(nums=[1, 2, 3], d=1), 3),
       (dict(nums=[3, 2, 1], d=5), 1), (dict(nums=[1, 10, 2, 11, 3, 12], d=1), 3),
       dict(nums=[1, 10, 2, 11, 3, 12], d=9), dict(nums=[5, 6, 1, 2, 7, 3, 8], d=1),
       dict(nums=[0, 3, 6, 9, 4, 7, 10, 5, 8, 11], d=3), (dict(nums=[-5, -4, -10, -3, -2], d=1), 4)]),

    # ------------------------------------------------------------------ 9028 interval DP
    P(9028, "hard", "minMergeCost", "piles: List[int]", "int",
      "Piles of stones stand in a row; piles[i] is the size of the i-th pile. In one operation you "
      "merge two adjacent piles into a single pile whose size is their sum, and you pay a cost "
      "equal to that sum. Return the minimum total cost to merge all piles into one pile.",
      [(dict(piles=[4, 1, 1, 4]), 18, "Merge 1 and 1 (cost 2), then 4 and 2 (cost 6), then 6 and 4 (cost 10)."),
       (dict(piles=[7]), 0, None)],
      ["1 <= piles.length <= 100", "1 <= piles[i] <= 10^4"],
      code("""
          class Solution:
              def minMergeCost(self, piles: List[int]) -> int:
                  n = len(piles)
                  pre = [0]
                  for p in piles:
                      pre.append(pre[-1] + p)
                  dp = [[0] * n for _ in range(n)]
                  for length in range(2, n + 1):
                      for i in range(n - length + 1):
                          j = i + length - 1
                          dp[i][j] = min(dp[i][m] + dp[m + 1][j] for m in range(i, j)) + pre[j + 1] - pre[i]
                  return dp[0][n - 1]
      """),
      [(dict(piles=[1, 2]), 3), (dict(piles=[3, 3, 3]), 15), (dict(piles=[1, 2, 3]), 9),
       dict(piles=[6, 4, 4, 6]), (dict(piles=[1, 1, 1, 1, 1, 1, 1, 1]), 24), dict(piles=[5, 1, 9, 2, 8]),
       dict(piles=[10, 1, 10]), dict(piles=[1, 100, 1, 100, 1]), dict(piles=[13, 7, 2, 9, 4, 11, 6, 3])]),

    # ------------------------------------------------------------------ 9029 heap flood fill
    P(9029, "hard", "trappedWater", "heightMap: List[List[int]]", "int",
      "An m x n grid heightMap gives the height of each unit column of a block landscape. Rain "
      "fills the landscape; water moves between cells that share a side and drains away as soon as "
      "it reaches a cell on the border of the grid, so it can only stay where it is enclosed by "
      "higher columns. Return the total volume of water (in unit cubes) that remains trapped.",
      [(dict(heightMap=[[3, 3, 3], [3, 1, 3], [3, 3, 3]]), 2, "The middle cell holds 2 units."),
       (dict(heightMap=[[5, 5, 5, 5], [5, 1, 2, 5], [5, 5, 0, 5]]), 1,
        "Water over (1, 1) can rise to height 2 before it spills over (1, 2) towards the low border cell.")],
      ["1 <= m, n <= 100", "0 <= heightMap[i][j] <= 2 * 10^4"],
      code("""
          class Solution:
              def trappedWater(self, heightMap: List[List[int]]) -> int:
                  m, n = len(heightMap), len(heightMap[0])
                  if m < 3 or n < 3:
                      return 0
                  seen = [[False] * n for _ in range(m)]
                  heap = []
                  for i in range(m):
                      for j in range(n):
                          if i in (0, m - 1) or j in (0, n - 1):
                              heappush(heap, (heightMap[i][j], i, j))
                              seen[i][j] = True
                  water = 0
                  while heap:
                      level, r, c = heappop(heap)
                      for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                          if 0 <= nr < m and 0 <= nc < n and not seen[nr][nc]:
                              seen[nr][nc] = True
                              h = heightMap[nr][nc]
                              if h < level:
                                  water += level - h
                              heappush(heap, (max(level, h), nr, nc))
                  return water
      """),
      [(dict(heightMap=[[1]]), 0), (dict(heightMap=[[1, 2], [3, 4]]), 0),
       (dict(heightMap=[[5, 5, 5], [5, 0, 5], [5, 5, 5]]), 5),
       (dict(heightMap=[[3, 3, 3, 3], [3, 0, 0, 3], [3, 0, 0, 3], [3, 3, 3, 3]]), 12),
       (dict(heightMap=[[4, 4, 4, 4, 4], [4, 1, 4, 1, 4], [4, 4, 4, 4, 4]]), 6),
       (dict(heightMap=[[4, 4, 4, 4, 4], [4, 1, 2, 1, 4], [4, 4, 4, 4, 4]]), 8),
       (dict(heightMap=[[5, 5, 5, 5], [5, 1, 1, 2], [5, 5, 5, 5]]), 2),
       (dict(heightMap=[[2, 2, 2], [2, 3, 2], [2, 2, 2]]), 0),
       dict(heightMap=[[9, 9, 9, 9, 9], [9, 2, 9, 4, 9], [9, 6, 1, 8, 9], [9, 9, 7, 9, 9]]),
       dict(heightMap=[[6, 7, 8, 6, 5], [7, 2, 1, 3, 6], [8, 4, 0, 2, 7], [5, 6, 3, 7, 8]])]),

    # ------------------------------------------------------------------ 9030 BFS on words
    P(9030, "medium", "shortestWordChain", "begin: str, end: str, words: List[str]", "int",
      "A chain is a sequence of words in which each word differs from the previous one in exactly "
      "one position. Given two distinct words begin and end of equal length and a list words, "
      "find the shortest chain that starts with begin and ends with end, where every word after "
      "begin must appear in words, and return how many words it contains (begin included). Return "
      "0 if no such chain exists.",
      [(dict(begin="cold", end="warm", words=["cord", "card", "ward", "warm", "wold", "word"]), 5,
        "One shortest chain is cold -> cord -> card -> ward -> warm."),
       (dict(begin="ab", end="cd", words=["ad", "cb"]), 0, "end is not in words.")],
      ["1 <= begin.length <= 10", "end.length == begin.length and begin != end", "1 <= words.length <= 5000",
       "every word in words has the same length as begin", "all words consist of lowercase English letters"],
      code("""
          class Solution:
              def shortestWordChain(self, begin: str, end: str, words: List[str]) -> int:
                  allowed = set(words)
                  if end not in allowed:
                      return 0
                  letters = 'abcdefghijklmnopqrstuvwxyz'
                  seen = {begin}
                  queue = deque([(begin, 1)])
                  while queue:
                      w, dist = queue.popleft()
                      for i in range(len(w)):
                          for ch in letters:
                              if ch == w[i]:
                                  continue
                              nw = w[:i] + ch + w[i + 1:]
                              if nw in allowed and nw not in seen:
                                  if nw == end:
                                      return dist + 1
                                  seen.add(nw)
                                  queue.append((nw, dist + 1))
                  return 0
      """),
      [(dict(begin="a", end="c", words=["a", "b", "c"]), 2), (dict(begin="hot", end="dog", words=["hot", "dog"]), 0),
       (dict(begin="abc", end="abd", words=["abd"]), 2), (dict(begin="aaa", end="bbb", words=["aab", "abb", "bbb"]), 4),
       (dict(begin="aaa", end="bbb", words=["baa", "bba", "bbb", "aab"]), 4),
       (dict(begin="lead", end="gold", words=["load", "goad", "gold", "lend"]), 4),
       (dict(begin="cat", end="dog", words=["cot", "cog", "dog", "cat"]), 4),
       (dict(begin="abcd", end="dcba", words=["abca", "dbcd"]), 0),
       dict(begin="pine", end="lake", words=["pike", "like", "lake", "line", "lane", "pane", "pale"])]),

    # ------------------------------------------------------------------ 9031 Fenwick tree
    P(9031, "hard", "countSumsInRange", "nums: List[int], lower: int, upper: int", "int",
      "You are given an integer array nums and two bounds lower and upper. Count the non-empty "
      "contiguous subarrays of nums whose element sum lies in the inclusive range [lower, upper].",
      [(dict(nums=[2, -1, 3], lower=1, upper=3), 4, "The subarrays [2], [3], [2,-1] and [-1,3] have sums 2, 3, 1 and 2."),
       (dict(nums=[0, 0], lower=1, upper=1), 0, None)],
      ["1 <= nums.length <= 10^5", "-10^9 <= nums[i] <= 10^9", "-10^14 <= lower <= upper <= 10^14"],
      code("""
          class Solution:
              def countSumsInRange(self, nums: List[int], lower: int, upper: int) -> int:
                  pre = [0]
                  for x in nums:
                      pre.append(pre[-1] + x)
                  vals = sorted(set(pre))
                  tree = [0] * (len(vals) + 1)

                  def add(i: int) -> None:
                      while i < len(tree):
                          tree[i] += 1
                          i += i & -i

                  def query(i: int) -> int:  # how many inserted values sit in the first i slots
                      s = 0
                      while i > 0:
                          s += tree[i]
                          i -= i & -i
                      return s

                  total = 0
                  for p in pre:
                      lo = bisect_left(vals, p - upper)
                      hi = bisect_right(vals, p - lower)
                      total += query(hi) - query(lo)
                      add(bisect_left(vals, p) + 1)
                  return total
      """),
      [(dict(nums=[5], lower=5, upper=5), 1), (dict(nums=[5], lower=6, upper=7), 0),
       (dict(nums=[1, 1, 1, 1], lower=2, upper=2), 3), (dict(nums=[1, -1, 1, -1], lower=0, upper=0), 4),
       dict(nums=[3, -2, 4, -1, 2], lower=2, upper=5), (dict(nums=[0, 0, 0], lower=0, upper=0), 6),
       (dict(nums=[-1000000000, -1000000000], lower=-2000000000, upper=-2000000000), 1),
       (dict(nums=[1, 2, 3, 4, 5], lower=-10, upper=100), 15),
       dict(nums=[4, -7, 2, 2, -3, 6, -1, 0, 5], lower=-2, upper=3)]),

    # ------------------------------------------------------------------ 9032 sort + LIS
    P(9032, "hard", "maxNestedBoxes", "boxes: List[List[int]]", "int",
      "Each box is given as boxes[i] = [w_i, h_i]. A box fits inside another box when both its "
      "width and its height are strictly smaller; boxes cannot be rotated. Return the largest "
      "number of boxes that can be nested one inside another in a single chain.",
      [(dict(boxes=[[2, 3], [4, 5], [3, 7], [5, 8], [1, 1]]), 4, "For example [1,1] in [2,3] in [4,5] in [5,8]."),
       (dict(boxes=[[2, 2], [2, 3], [2, 4]]), 1, "All widths are equal, so no box fits in another.")],
      ["1 <= boxes.length <= 10^5", "1 <= w_i, h_i <= 10^9"],
      code("""
          class Solution:
              def maxNestedBoxes(self, boxes: List[List[int]]) -> int:
                  order = sorted(boxes, key=lambda b: (b[0], -b[1]))
                  tails = []
                  for _, h in order:
                      i = bisect_left(tails, h)
                      if i == len(tails):
                          tails.append(h)
                      else:
                          tails[i] = h
                  return len(tails)
      """),
      [(dict(boxes=[[1, 1]]), 1), (dict(boxes=[[1, 1], [2, 2], [3, 3]]), 3), (dict(boxes=[[3, 3], [2, 2], [1, 1]]), 3),
       (dict(boxes=[[1, 5], [2, 4], [3, 3], [4, 2]]), 1), (dict(boxes=[[1, 1], [1, 2], [2, 1], [2, 2]]), 2),
       dict(boxes=[[4, 6], [5, 5], [6, 7], [2, 3], [7, 8]]),
       (dict(boxes=[[1, 2], [2, 3], [3, 4], [3, 5], [4, 5]]), 4), (dict(boxes=[[10, 10], [9, 11], [8, 12]]), 1),
       dict(boxes=[[8, 1], [3, 9], [5, 4], [6, 6], [2, 2], [7, 7], [4, 3], [9, 8], [1, 5]])]),
]


# ---------------------------------------------------------------------------------- rendering

def fmt_example(v) -> str:
    """LeetCode-style rendering of an example value: compact lists, double-quoted strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_example(x) for x in v) + "]"
    return repr(v)


def render_description(p: dict) -> str:
    parts = [p["statement"].strip()]
    for i, (kwargs, expected, explanation) in enumerate(p["examples"], 1):
        args = ", ".join(f"{k} = {fmt_example(v)}" for k, v in kwargs.items())
        ex = f"Example {i}:\n\nInput: {args}\nOutput: {fmt_example(expected)}"
        if explanation:
            ex += f"\nExplanation: {explanation}"
        parts.append(ex)
    parts.append("Constraints:\n\n" + "\n".join(p["constraints"]))
    return "\n\n".join(parts) + "\n"


def starter_code(p: dict) -> str:
    return f"class Solution:\n    def {p['method']}(self, {p['params']}) -> {p['ret']}:"


def run_canonical(p: dict, kwargs: dict):
    ns: dict = {}
    exec(SETUP_CODE, ns)
    exec(p["canonical"], ns)
    return getattr(ns["Solution"](), p["method"])(**copy.deepcopy(kwargs))


def assert_line(method: str, kwargs: dict, expected) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"assert Solution().{method}({args}) == {expected!r}"


def build_tests(p: dict) -> list[str]:
    cases = [(kw, exp) for kw, exp, _ in p["examples"]]
    cases += [t if isinstance(t, tuple) else (t, None) for t in p["tests"]]
    lines, values = [], []
    for kwargs, hand in cases:
        got = run_canonical(p, kwargs)
        if hand is not None and got != hand:
            raise AssertionError(f"{p['pid']}: canonical gives {got!r} for {kwargs}, expected {hand!r}")
        if isinstance(got, float) or got is None:
            raise AssertionError(f"{p['pid']}: unsupported expected value {got!r}")
        values.append(got)
        lines.append(assert_line(p["method"], kwargs, got))
    if not MIN_TESTS <= len(lines) <= MAX_TESTS:
        raise AssertionError(f"{p['pid']}: {len(lines)} tests, want {MIN_TESTS}-{MAX_TESTS}")
    if len(set(lines)) != len(lines):
        raise AssertionError(f"{p['pid']}: duplicate tests")
    if all(v == values[0] for v in values):
        raise AssertionError(f"{p['pid']}: all expected values are equal, a constant would pass")
    return lines


def build_rows() -> list[dict]:
    rows, seen = [], set()
    for p in PROBLEMS:
        if p["pid"] in seen:
            raise AssertionError(f"duplicate id {p['pid']}")
        seen.add(p["pid"])
        if p["difficulty"] not in ("medium", "hard"):
            raise AssertionError(f"{p['pid']}: bad difficulty {p['difficulty']!r}")
        desc = render_description(p)
        if ORIGINAL_PHRASE in desc or not desc.isascii():
            raise AssertionError(f"{p['pid']}: description must be ASCII and must not contain the hint phrase")
        rows.append(make_row(pid=p["pid"], difficulty=p["difficulty"], description=desc,
                             method=p["method"], starter_code=starter_code(p),
                             tests=build_tests(p), canonical=p["canonical"]))
    return rows


def render_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)


def main() -> None:
    rows = build_rows()
    OUT_PATH.write_text(render_jsonl(rows), encoding="utf-8")
    hard = sum(r["difficulty"] == "hard" for r in rows)
    print(f"wrote {len(rows)} problems ({len(rows) - hard} medium, {hard} hard) to {OUT_PATH}")


if __name__ == "__main__":
    main()
