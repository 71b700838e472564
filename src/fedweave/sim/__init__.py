"""Simulated time: node profiles and fault draws (``sim.clock``), the virtual-time event loop
every simulated run shares (``sim.scheduler``) and messages in flight between peers
(``sim.transport``). Nothing here reads wall-clock time: results depend only on the seed and
the clock profiles."""
