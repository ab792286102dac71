import json, time, urllib.error, urllib.request

def janitor_skip(url, token, execution_id, agent=None, tries=5, timeout=5.0):
    """Hands a skipped run to janitor (POST /api/v1/skip); returns its receipt. Safe to retry:
    the endpoint is idempotent, so a repeat after a lost answer is `already_queued`."""
    body = json.dumps({"execution_id": execution_id, "agent": agent}).encode()
    request = urllib.request.Request(f"{url}/api/v1/skip", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:  # a 4xx will not change: the token, id or status
            if (e.code < 500 and e.code != 429) or attempt == tries - 1:
                raise
        except OSError:  # refused, reset, timed out: janitor or the network is away
            if attempt == tries - 1:
                raise
        time.sleep(min(0.2 * 2**attempt, 5.0))
