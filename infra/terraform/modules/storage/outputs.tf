output "bucket_name" {
  value = aws_s3_bucket.runs.id
}

output "bucket_arn" {
  value = aws_s3_bucket.runs.arn
}

output "access_policy_json" {
  description = "Least-privilege IAM policy document for reading and writing runs in the bucket."
  value       = data.aws_iam_policy_document.access.json
}
