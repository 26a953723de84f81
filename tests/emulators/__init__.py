"""Emulators of cloud services for tests: real SDK clients talk to them on 127.0.0.1.

They know nothing of aiaas's provider code; they emulate the cloud (and name every gap
between the emulator and the real service in a comment).
"""
