"""Offline stand-ins for Drip: its track.js with a collector, and its REST API."""
