"""schemathesis hooks for scripts/api-contract.sh (loaded through SCHEMATHESIS_HOOKS).

tus sends its bytes as application/offset+octet-stream: generate them as schemathesis does
for application/octet-stream.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
