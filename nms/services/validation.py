"""What the NMS services share when they refuse input."""

from collections.abc import Mapping

from nms.models import CredentialProfile


class FieldErrors(ValueError):
    """Input Census refuses; ``errors`` maps each offending field to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {text}" for field, text in self.errors.items()))


def credential_for_protocol(
    credential_id: object, protocol: str, *, invalid: type[FieldErrors]
) -> CredentialProfile:
    """The credential profile with this id, if it speaks ``protocol``; else ``invalid``."""
    credential = CredentialProfile.objects.filter(pk=credential_id).first()
    if credential is None:
        raise invalid({"credential": f"no credential profile has id {credential_id}."})
    if credential.protocol != protocol:
        raise invalid(
            {
                "credential": f"credential {credential.name!r} is for {credential.protocol}, "
                f"not {protocol}."
            }
        )
    return credential
