#!/bin/sh
# The front page (httpd runs /cgi-bin/index.cgi for / when there is no index.html): its
# version and what the API at CONVEYOR_URL_API answered, which carries the worker's.
version=$(cat /www/version)
if said=$(/bin/http-get "${CONVEYOR_URL_API%/}/cgi-bin/api" 2>&1); then
    printf 'Content-Type: text/html\r\n\r\n'
else
    printf 'Status: 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n'
    said="the API did not answer: $said"
fi
echo "<html><body><h1>shop front $version</h1><p>$said</p></body></html>"
