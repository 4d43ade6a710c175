"""The presentation contexts the SCP accepts: SOP classes and transfer syntaxes.

When a requestor proposes several transfer syntaxes in one presentation context,
pynetdicom (3.0) accepts the first syntax of the SCP's list that the requestor also
proposed. The lists below therefore run from uncompressed through lossless to lossy,
so the SCP never selects a lossy syntax when the sender also offers an uncompressed one.
"""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
    RLELossless,
)
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
)

from noctis_ingest_scp.qr_models import QUERY_RETRIEVE_SOP_CLASS_UIDS

VERIFICATION_SOP_CLASS_UID = UID("1.2.840.10008.1.1")
STORAGE_COMMITMENT_PUSH_MODEL_SOP_CLASS_UID = UID("1.2.840.10008.1.20.1")

UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
LOSSLESS_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
)
LOSSY_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
    JPEG2000MC,
    HTJ2K,
)
# MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 video, as pydicom 3.0 lists them.
VIDEO_TRANSFER_SYNTAXES: tuple[UID, ...] = tuple(MPEGTransferSyntaxes)

# NOTE: JPEG XL (1.2.840.10008.1.2.4.110-112) is missing because pydicom 3.0.2 does not
# name it yet; senders fall back to another proposed syntax.
STORAGE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *UNCOMPRESSED_TRANSFER_SYNTAXES,
    *LOSSLESS_TRANSFER_SYNTAXES,
    *LOSSY_TRANSFER_SYNTAXES,
    *VIDEO_TRANSFER_SYNTAXES,
)


def storage_sop_class_uids() -> list[UID]:
    """Return the UIDs of every Storage SOP class that pynetdicom defines (170 in 3.0.4)."""
    return [
        UID(context.abstract_syntax)
        for context in AllStoragePresentationContexts
        if context.abstract_syntax is not None
    ]


class CopyablePresentationContext(PresentationContext):
    """A presentation context that pynetdicom copies for each association at little cost.

    pynetdicom deep-copies the acceptor's supported contexts for every association it
    accepts. With pynetdicom 3.0 the deep copy of Noctis's 178 contexts created each of
    their 5,812 transfer syntax UIDs anew, and pydicom validates every new UID against a
    regular expression. That cost about 50 ms of CPU per association, most of a C-STORE
    from a sender that opens one association per instance. A context's attributes are
    immutable values except its list of transfer syntaxes, so a copy that shares the
    values and copies that list is as independent as a deep copy.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> CopyablePresentationContext:
        duplicate = type(self).__new__(type(self))
        for name, value in vars(self).items():
            setattr(duplicate, name, list(value) if isinstance(value, list) else value)
        memo[id(self)] = duplicate
        return duplicate


def _copyable(context: PresentationContext) -> CopyablePresentationContext:
    copyable = CopyablePresentationContext()
    copyable.abstract_syntax = context.abstract_syntax
    copyable.transfer_syntax = list[str | bytes | UID](context.transfer_syntax)
    copyable.scu_role = context.scu_role
    copyable.scp_role = context.scp_role
    return copyable


def supported_presentation_contexts() -> list[PresentationContext]:
    """Build the SCP's contexts: Verification, Storage Commitment, Query/Retrieve, Storage.

    The 128-context limit of PS3.8 applies to what one requestor proposes, not to
    what an acceptor supports, so all storage SOP classes fit. Storage contexts accept
    the SCP/SCU Role Selection a C-GET requestor proposes to become their SCP.
    """
    contexts = [
        build_context(VERIFICATION_SOP_CLASS_UID, list(UNCOMPRESSED_TRANSFER_SYNTAXES)),
        build_context(
            STORAGE_COMMITMENT_PUSH_MODEL_SOP_CLASS_UID, list(UNCOMPRESSED_TRANSFER_SYNTAXES)
        ),
    ]
    contexts.extend(
        build_context(sop_class_uid, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
        for sop_class_uid in QUERY_RETRIEVE_SOP_CLASS_UIDS
    )
    for sop_class_uid in storage_sop_class_uids():
        context = build_context(sop_class_uid, list(STORAGE_TRANSFER_SYNTAXES))
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    return [_copyable(context) for context in contexts]
