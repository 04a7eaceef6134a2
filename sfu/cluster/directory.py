"""The directory of several nodes, in Redis: which nodes live, how loaded, and where each exam runs.

Used by `invigil serve --directory redis://host:port`. What Redis holds, and nothing else
(no names, no tokens, no participants' addresses):

- `invigil:node:<node id>`: the node's URL (where other nodes reach it), whether it takes
  new exams, and its counts (exams, students and surveillants, CPU, packets per second);
  written every HEARTBEAT seconds with a TTL of NODE_TTL, so a node that stops
  heartbeating disappears within NODE_TTL;
- `invigil:exam:<exam id>`: the node id running it, expiring at the exam's end;
- `invigil:lock:<exam id>`: held for at most LOCK_TTL while one node places a new exam,
  so two nodes that see its first joins at once agree on one place.

An exam whose node is gone is placed again, at its next join, on the node chosen then
(sfu/cluster/placement.py); the links carry its settings, so it is recreated there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from .placement import Load, route

logger = logging.getLogger(__name__)

HEARTBEAT = 1.0
NODE_TTL = 5.0
LOCK_TTL = 5.0
PREFIX = "invigil:"

# Delete the lock only if it is still ours (it may have expired and been taken since).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Node:
    """One node as its heartbeat describes it."""

    node_id: str
    url: str
    accepting: bool = True
    exams: int = 0
    participants: int = 0
    cpu: float = 0.0
    packets_per_second: float = 0.0

    def load(self) -> Load:
        """The node's load, for the placement policy."""
        return Load(self.node_id, self.exams, self.participants, self.cpu, self.accepting)


class Directory:
    """This node's view of the directory: its own heartbeat and the placement of exams."""

    def __init__(self, redis_url: str, node_url: str) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.node_id = secrets.token_hex(8)
        self.node_url = node_url

    async def beat(self, node: Node) -> None:
        """Write this node's heartbeat (its counts now), alive for NODE_TTL."""
        value = json.dumps({k: v for k, v in asdict(node).items() if k != "node_id"})
        await self.redis.set(PREFIX + "node:" + self.node_id, value, px=int(NODE_TTL * 1000))

    async def leave(self) -> None:
        """Remove this node's heartbeat at once (it stopped)."""
        await self.redis.delete(PREFIX + "node:" + self.node_id)

    async def nodes(self) -> dict[str, Node]:
        """The live nodes, by id."""
        keys = [key async for key in self.redis.scan_iter(match=PREFIX + "node:*", count=100)]
        if not keys:
            return {}
        found: dict[str, Node] = {}
        for key, value in zip(keys, await self.redis.mget(keys)):
            if value is None:
                continue
            node_id = key.decode().rsplit(":", 1)[1]
            try:
                found[node_id] = Node(node_id=node_id, **_known(json.loads(value)))
            except (ValueError, TypeError):
                continue
        return found

    async def place(self, exam_id: str, ends_at: int) -> Node | None:
        """The node that runs `exam_id`: where it runs if that node lives, else (under the
        exam's lock) the least-loaded accepting node, recorded until the exam ends.
        None when no node accepts exams."""
        exam_key = PREFIX + "exam:" + exam_id
        nodes = await self.nodes()
        holder = await self.redis.get(exam_key)
        if holder is not None and holder.decode() in nodes:
            return nodes[holder.decode()]
        lock_key, mine = PREFIX + "lock:" + exam_id, secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_TTL
        while not await self.redis.set(lock_key, mine, nx=True, px=int(LOCK_TTL * 1000)):
            if loop.time() > deadline:
                raise TimeoutError("the exam's lock was not released")
            await asyncio.sleep(0.05)
        try:
            nodes = await self.nodes()
            holder = await self.redis.get(exam_key)
            placed = {exam_id: holder.decode()} if holder is not None else {}
            # Exams are counted from their keys, not the heartbeats: an exam placed a moment ago
            # has not reached its node's census yet, and the next one must not follow it there.
            counts = await self.exams_per_node()
            loads = [replace(node.load(), exams=counts.get(node.node_id, 0)) for node in nodes.values()]
            chosen = route(exam_id, placed, loads)
            if chosen is None:
                return None
            if placed.get(exam_id) != chosen:
                await self.redis.set(exam_key, chosen, exat=ends_at)
                logger.info("exam %s: placed on node %s", exam_id, chosen)
            return nodes[chosen]
        finally:
            await self.redis.eval(_RELEASE, 1, lock_key, mine)

    async def exams_per_node(self) -> dict[str, int]:
        """How many exam keys name each node."""
        keys = [key async for key in self.redis.scan_iter(match=PREFIX + "exam:*", count=500)]
        counts: dict[str, int] = {}
        for value in await self.redis.mget(keys) if keys else []:
            if value is not None:
                counts[value.decode()] = counts.get(value.decode(), 0) + 1
        return counts

    async def close(self) -> None:
        """Close the connection to Redis."""
        await self.redis.aclose()


def _known(value: Any) -> dict[str, Any]:
    fields = ("url", "accepting", "exams", "participants", "cpu", "packets_per_second")
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise ValueError("not a heartbeat")
    return {key: value[key] for key in fields if key in value}
