"""The VCS test rig: a GitLab token endpoint, a fake GitLab/GitHub forge and webhook senders.

See README.md in this directory for the API the VCS tests code against.
"""
