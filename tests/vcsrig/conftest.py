"""Tests of the VCS rig itself (tests/support/vcs): its fixtures come from tests/conftest.py."""
