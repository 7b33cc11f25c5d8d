"""The sandbox's port choice: ports handed out before they are bound must not be handed out again."""

from __future__ import annotations

from sandbox.stack import _ephemeral_range, free_port


def test_a_process_never_gets_the_same_port_twice_even_before_binding_them():
    # 300 draws from a 12,000-port range repeat one almost surely (birthday bound) unless remembered
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < _ephemeral_range()[0] for p in ports)
