#!/bin/bash
# Reference solution.
set -euo pipefail
app=/workspace/app
install -d -o svc -g svc -m 0700 "$app/backups"
install -d -o svc -g svc -m 0755 "$app/logs"
install -d -m 0755 "$app/bin" "$app/etc" "$app/etc/cron.d"
printf 'RETENTION_DAYS=7\n' > "$app/etc/backup.env"
chown svc:svc "$app/etc/backup.env"
chmod 0600 "$app/etc/backup.env"
cat > "$app/bin/backup.sh" <<'SH'
#!/bin/bash
# Nightly backup of /workspace/app/data, with retention from etc/backup.env.
set -euo pipefail
app=/workspace/app
# shellcheck source=/dev/null
. "$app/etc/backup.env"
archive="$app/backups/data-$(date -u +%Y%m%d).tar.gz"
tar -C "$app" -czf "$archive.tmp" data
mv "$archive.tmp" "$archive"
find "$app/backups" -maxdepth 1 -type f -name 'data-*.tar.gz' -mmin "+$((RETENTION_DAYS * 1440))" -delete
echo "$(date -u +%FT%TZ) wrote $archive"
SH
chown svc:svc "$app/bin/backup.sh"
chmod 0750 "$app/bin/backup.sh"
cat > "$app/etc/cron.d/backup" <<'CRON'
# Nightly backup of the billing app data (system crontab format: m h dom mon dow user command)
SHELL=/bin/bash
30 2 * * * svc /workspace/app/bin/backup.sh >> /workspace/app/logs/backup.log 2>&1
CRON
