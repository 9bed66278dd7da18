"""The private module registry: HCP Terraform's registry-modules API (``/api/v2``) and the
module registry protocol (``modules.v1`` → ``/api/registry/v1/modules/``).

cairn publishes no modules yet: every organization's registry is empty, so lists are empty
and a module or version is a 404, answered only to those who may read the organization (the
namespace of a private module is its organization's name)."""
